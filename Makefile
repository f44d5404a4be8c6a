# Diffusion Blocks: `make test` and `make demo` work on a fresh machine (they provision first).
PYTHON_SYSTEM ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8188

.PHONY: setup test test-unit test-e2e setup-0.33 test-e2e-0.33 demo generate comfyui clean

setup:
	@$(PYTHON_SYSTEM) scripts/setup.py

test: setup
	@$(PY) -m pytest

test-unit: setup
	@$(PY) -m pytest tests/unit

test-e2e: setup
	@$(PY) -m pytest tests/e2e

# The end-to-end tier again on ComfyUI 0.33.0 (.ci/run runs it after `make test`), with the in-process comparisons of
# ComfyUI's U-Net protocol (its patch points differ between versions), conditioning and the native CLIP, from the
# source archive that CI has at ../shared/hosts/; its own venv reuses .venv's packages (scripts/setup.py says why) and its own link in .cache/.
# Skipped, with a printed line, where the archive is absent.
COMFYUI_033_ARCHIVE ?= ../shared/hosts/comfyui-0.33.0.tar.gz
VENV_033 ?= .venv-comfyui-0.33

setup-0.33: setup
	@$(PYTHON_SYSTEM) scripts/setup.py --venv $(VENV_033) --comfyui-archive $(COMFYUI_033_ARCHIVE) \
		--link comfyui-0.33 --share-packages-of $(VENV)

test-e2e-0.33:
	@if [ -f "$(COMFYUI_033_ARCHIVE)" ]; then \
		$(MAKE) --no-print-directory setup-0.33 && \
		COMFYUI_PATH= $(VENV_033)/bin/python -m pytest tests/e2e tests/in_comfy/test_unet_protocol.py \
			tests/in_comfy/test_conditioning.py tests/in_comfy/test_native_clip.py \
			-o pythonpath="tests .cache/comfyui-0.33"; \
	else \
		echo "SKIPPED test-e2e-0.33: no ComfyUI 0.33.0 archive at $(COMFYUI_033_ARCHIVE)"; \
	fi

demo: setup
	@$(PY) scripts/demo.py

# make generate ARGS='--prompt "a red circle left of a blue square on a white background" --seed 1'
generate: setup
	@$(PY) scripts/generate.py $(ARGS)

comfyui: setup
	@$(PY) scripts/comfyui.py --port $(PORT)

clean:
	rm -rf $(VENV) $(VENV_033) .cache .pytest_cache diffusion_blocks.egg-info
