"""The pack's layering and its one way to be imported: installed in .venv as `diffusion_blocks`, no sys.path editing."""
import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from diffusion_blocks.devtools.paths import PACK_ROOT, comfyui_path

CORE = ("schedules", "samplers", "networks", "views", "pipeline")
# ComfyUI's top-level modules that code may import (only nodes/, devtools/, tests and benchmarks may).
COMFYUI_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "comfy_config", "folder_paths", "nodes",
                   "node_helpers", "latent_preview", "server", "execution", "comfyui_version", "app", "utils"}
NOT_THE_PACK = {".venv", ".cache", ".git", "out", "build"}  # folders of the checkout that are not its source
SYS_PATH_EDIT = re.compile(r"\bsys\.path\s*(\.\s*(insert|append|extend)\b|\[|\+=|=(?!=))")


def run_isolated(code, cwd):
    """Run Python in an empty folder (nothing on the path but the venv) and return what it prints as JSON."""
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def source_files(*top):
    """The checkout's .py files (all, or those under the given top-level folders)."""
    for path in sorted(PACK_ROOT.rglob("*.py")):
        parts = path.relative_to(PACK_ROOT).parts
        if parts[0] in NOT_THE_PACK or any(p.startswith(".") for p in parts) or (top and parts[0] not in top):
            continue
        yield path


def imported_modules(path):
    """Absolute names of everything a file imports, at any depth; relative imports resolved inside the pack."""
    package = ["diffusion_blocks", *path.relative_to(PACK_ROOT).parts[:-1]]  # what `.` means in this file
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield module
            if not node.module:  # from . import x
                yield from (f"{module}.{alias.name}" for alias in node.names)


def test_the_pack_is_installed_as_diffusion_blocks_mapped_to_its_folder(tmp_path):
    """Editable install (scripts/setup.py): the top-level name maps to the folder, so subpackages added later
    import without reinstalling; the checkout's other folders (tests/, scripts/, samplers/, ...) are not on the path."""
    found = run_isolated(
        "import importlib.util, json\n"
        "spec = importlib.util.find_spec('diffusion_blocks')\n"
        "others = {n: getattr(importlib.util.find_spec(n), 'origin', None) for n in "
        "('scripts', 'benchmarks', 'harness', 'devtools', 'samplers', 'schedules', 'networks', 'training', 'tests')}\n"
        "print(json.dumps([spec.origin, list(spec.submodule_search_locations), others]))", tmp_path)
    origin, locations, others = found
    assert origin == str(PACK_ROOT / "__init__.py") and locations == [str(PACK_ROOT)]
    inside = {name: where for name, where in others.items() if where and PACK_ROOT in Path(where).resolve().parents}
    assert all(comfyui_path() in Path(where).resolve().parents for where in inside.values()), inside  # ComfyUI's tests/


def test_core_packages_import_without_comfyui(tmp_path):
    present = [name for name in CORE if (PACK_ROOT / name / "__init__.py").exists()]
    loaded = run_isolated(
        "import importlib, json, sys\n"
        f"for name in {present!r}: importlib.import_module('diffusion_blocks.' + name)\n"
        "from diffusion_blocks.schedules import get_sigmas\n"
        "get_sigmas('karras', 4, sigma_min=0.03, sigma_max=14.6)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(COMFYUI_MODULES)!r})))",
        tmp_path)
    assert loaded == []


def test_importing_the_pack_does_not_import_torch(tmp_path):
    loaded = run_isolated("import json, sys, diffusion_blocks\nprint(json.dumps('torch' in sys.modules))", tmp_path)
    assert loaded is False


def test_core_imports_neither_comfyui_nor_the_nodes_nor_devtools():
    for path in source_files(*CORE):
        for module in imported_modules(path):
            top = module.split(".")
            assert top[0] not in COMFYUI_MODULES, f"{path}: imports {module}"
            assert top[:2] not in (["diffusion_blocks", "nodes"], ["diffusion_blocks", "devtools"]), f"{path}: {module}"


def test_only_scripts_benchmarks_and_tests_import_devtools():
    for path in source_files():
        if path.relative_to(PACK_ROOT).parts[0] in ("devtools", "scripts", "benchmarks", "tests"):
            continue
        for module in imported_modules(path):
            assert not module.startswith("diffusion_blocks.devtools"), f"{path}: imports {module}"


def test_nothing_outside_tests_imports_from_tests():
    for path in source_files():
        if path.relative_to(PACK_ROOT).parts[0] == "tests":
            continue
        for module in imported_modules(path):
            assert module.split(".")[0] not in ("tests", "harness"), f"{path}: imports {module}"


def test_tests_do_not_import_scripts():
    """What tests share with scripts lives in devtools/; a script is tested by running it."""
    scripts = {path.stem for path in (PACK_ROOT / "scripts").glob("*.py")} | {"scripts", "benchmarks"}
    for path in source_files("tests"):
        for module in imported_modules(path):
            assert module.split(".")[0] not in scripts, f"{path}: imports {module}"


def test_no_file_edits_sys_path():
    """The pack is imported as an installed package and ComfyUI through the venv's .pth (scripts/setup.py)."""
    for path in source_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not SYS_PATH_EDIT.search(line), f"{path}:{number}: {line.strip()}"


def test_pyproject_names_every_subpackage_for_a_wheel():
    listed = set(tomllib.loads((PACK_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(["diffusion_blocks", *init.parent.relative_to(PACK_ROOT).parts])
               for init in source_files() if init.name == "__init__.py" and init.parts[len(PACK_ROOT.parts)] != "tests"}
    assert listed == folders


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
