# Diffusion Blocks: `make test` and `make demo` work on a fresh machine (they provision first).
PYTHON_SYSTEM ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8188

.PHONY: setup test test-unit demo generate comfyui clean

setup:
	@$(PYTHON_SYSTEM) scripts/setup.py

test: setup
	@$(PY) -m pytest

test-unit: setup
	@$(PY) -m pytest tests/unit

demo: setup
	@$(PY) scripts/demo.py

# make generate ARGS='--prompt "a red circle left of a blue square on a white background" --seed 1'
generate: setup
	@$(PY) scripts/generate.py $(ARGS)

comfyui: setup
	@$(PY) scripts/comfyui.py --port $(PORT)

clean:
	rm -rf $(VENV) .cache .pytest_cache diffusion_blocks.egg-info
