"""The pack's layering: the core imports without ComfyUI, and importing the pack stays light."""
import json
import subprocess
import sys
import tomllib

from harness.paths import IMPORT_ROOT, PACK_ROOT

CORE = ("schedules", "samplers", "networks", "views")


def run_isolated(code):
    """Run Python with only the pack on its path (no ComfyUI) and return what it prints as JSON."""
    result = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(IMPORT_ROOT)!r})\n{code}"],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_core_packages_import_without_comfyui():
    loaded = run_isolated(
        "import importlib, json\n"
        f"for name in {CORE!r}: importlib.import_module('diffusion_blocks.' + name)\n"
        "from diffusion_blocks.schedules import get_sigmas\n"
        "get_sigmas('karras', 4, sigma_min=0.03, sigma_max=14.6)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('comfy', 'comfy_api', 'nodes', 'folder_paths'))))")
    assert loaded == []


def test_importing_the_pack_does_not_import_torch():
    loaded = run_isolated("import json, diffusion_blocks\nprint(json.dumps('torch' in sys.modules))")
    assert loaded is False


def test_core_never_mentions_comfy_imports():
    for package in CORE:
        for path in (PACK_ROOT / package).rglob("*.py"):
            for line in path.read_text().splitlines():
                stripped = line.strip()
                assert not (stripped.startswith(("import comfy", "from comfy"))), f"{path}: {line}"


def test_requirements_leave_torch_to_comfyui():
    for line in (PACK_ROOT / "requirements.txt").read_text().splitlines():
        name = line.split("#")[0].strip().split("=")[0].split(">")[0].split("<")[0].strip().lower()
        assert name not in {"torch", "torchvision", "torchaudio", "torchsde"}


def test_pyproject_declares_the_comfy_registry_fields():
    project = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == "diffusion-blocks"
    assert project["tool"]["comfy"]["DisplayName"] == "Diffusion Blocks"
    assert project["tool"]["comfy"]["requires-comfyui"].startswith(">=")
    assert "GNU GENERAL PUBLIC LICENSE" in (PACK_ROOT / "LICENSE").read_text()[:200]
