"""Ready for the Comfy Registry: pyproject.toml by the registry's specification (docs.comfy.org/registry/specifications,
as comfy-cli checks it), the icon, a thumbnail per example workflow, what `comfy node publish` would send, and runtime
code with no eval / exec / subprocess / os.system / unsafe pickle loading."""
import ast
import re
import subprocess
import tomllib
import warnings

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from pathspec import PathSpec
from PIL import Image

from diffusion_blocks.devtools.paths import PACK_ROOT

PYPROJECT = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text())
PROJECT, COMFY = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
# The ComfyUI versions the tests run on: `make test` (0.3.75 from PyPI) and `make test-e2e-0.33` (the archive CI has).
TESTED_COMFYUI = ("0.3.75", "0.33.0")
PLACEHOLDER_REPOSITORY = "https://placeholder.invalid/diffusion-blocks"  # the project has no public home yet
RUNTIME = ("__init__.py", "nodes", "schedules", "samplers", "networks", "pipeline", "views")
WORKFLOWS = PACK_ROOT / "example_workflows"
# comfy-cli's check of requires-comfyui (comfy_cli/registry/config_parser.py, validate_version): each comma-separated
# part is an optional operator and a major.minor.patch version; anything else is dropped at publishing.
COMFY_CLI_VERSION_PART = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")


def test_name_is_a_valid_registry_node_id():
    """Under 100 characters; letters, digits, '-', '_', '.'; no two specials in a row; starts with a letter; no
    "ComfyUI" in it; lowercase (the id is compared case-insensitively)."""
    name = PROJECT["name"]
    assert len(name) < 100 and name == name.lower()
    assert re.fullmatch(r"[a-z][a-z0-9]*(?:[-_.][a-z0-9]+)*", name), name
    assert "comfy" not in name


def test_version_is_semver_and_license_description_and_repository_are_given():
    assert re.fullmatch(r"\d+\.\d+\.\d+", PROJECT["version"]), PROJECT["version"]
    license_ = PROJECT["license"]
    assert isinstance(license_, dict) and set(license_) <= {"file", "text"}, license_
    assert (PACK_ROOT / license_["file"]).is_file() if "file" in license_ else license_["text"].strip()
    assert PROJECT["description"].strip()
    assert PROJECT["urls"]["Repository"] == PLACEHOLDER_REPOSITORY
    for classifier in PROJECT.get("classifiers", []):
        if classifier.startswith("Operating System :: "):
            assert classifier.split(" :: ")[1] in {"Microsoft", "POSIX", "MacOS", "OS Independent"}, classifier


def test_tool_comfy_has_publisher_display_name_icon_and_includes():
    assert re.fullmatch(r"[a-z][a-z0-9-]*", COMFY["PublisherId"]), COMFY["PublisherId"]
    assert COMFY["DisplayName"].strip()
    icon = COMFY["Icon"]  # a URL (SVG, PNG, JPG or GIF), or empty until the project has a public home
    assert icon == "" or re.fullmatch(r"https://\S+\.(svg|png|jpe?g|gif)", icon), icon
    assert isinstance(COMFY["includes"], list)
    assert all((PACK_ROOT / folder).exists() for folder in COMFY["includes"]), COMFY["includes"]


def test_requires_comfyui_is_the_range_the_tests_run_on():
    """comfy-cli's format (major.minor.patch in every part), every tested version in it, nothing older than the
    oldest tested, nothing from the minor release after the newest tested."""
    wanted = COMFY["requires-comfyui"]
    parts = [part.strip() for part in wanted.split(",")]
    assert all(COMFY_CLI_VERSION_PART.match(part) for part in parts), wanted
    spec = SpecifierSet(wanted)
    assert all(version in spec for version in TESTED_COMFYUI), wanted
    oldest, newest = min(map(Version, TESTED_COMFYUI)), max(map(Version, TESTED_COMFYUI))
    assert f"{oldest.major}.{oldest.minor}.{oldest.micro - 1}" not in spec
    assert f"{newest.major}.{newest.minor + 1}.0" not in spec


def test_the_icon_is_a_square_png_of_at_most_400_pixels():
    with Image.open(PACK_ROOT / "docs" / "icon.png") as icon:
        assert icon.format == "PNG" and icon.width == icon.height and 64 <= icon.width <= 400, (icon.format, icon.size)
        colours = icon.convert("RGB").getcolors(maxcolors=icon.width * icon.height)
        assert len(colours) > 100  # a picture, not a flat colour


def test_every_ui_example_workflow_has_a_jpg_thumbnail_of_the_same_name():
    """ComfyUI's template browser shows example_workflows/<name>.jpg as the card of <name>.json."""
    workflows = {path.stem for path in WORKFLOWS.glob("*.json")}
    thumbnails = {path.stem for path in WORKFLOWS.glob("*.jpg")}
    assert workflows and thumbnails == workflows
    for name in sorted(thumbnails):
        path = WORKFLOWS / f"{name}.jpg"
        with Image.open(path) as picture:
            assert picture.format == "JPEG" and max(picture.size) <= 512, (name, picture.format, picture.size)
        assert path.stat().st_size < 100_000, name


def published_files():
    """What `comfy node publish` zips: the files git tracks (here also the new ones it does not ignore, as they will
    be once committed) minus .comfyignore's patterns, matched as comfy-cli matches them (pathspec, gitwildmatch)."""
    listed = subprocess.run(["git", "-C", str(PACK_ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True, text=True).stdout.splitlines()
    lines = (PACK_ROOT / ".comfyignore").read_text().splitlines()
    with warnings.catch_warnings():  # pathspec 1.x calls comfy-cli's "gitwildmatch" deprecated; same patterns
        warnings.simplefilter("ignore", DeprecationWarning)
        ignore = PathSpec.from_lines("gitwildmatch", [line.strip() for line in lines
                                                      if line.strip() and not line.lstrip().startswith("#")])
    includes = [folder.strip("/") for folder in COMFY["includes"]]
    forced = lambda path: any(path == folder or path.startswith(folder + "/") for folder in includes)  # noqa: E731
    return {path for path in listed if (PACK_ROOT / path).is_file() and (forced(path) or not ignore.match_file(path))}


def test_the_published_package_is_the_pack_without_tests_benchmarks_training_logs_or_docs_pictures():
    published = published_files()
    assert not [p for p in published if p.split("/")[0] in ("tests", "benchmarks", "docs", ".ci")
                or p.startswith("training/logs/")]
    wanted = {"__init__.py", "pyproject.toml", "LICENSE", "README.md", "requirements.txt",
              "models/diffusion_blocks_shapes.safetensors"}
    wanted |= {p.relative_to(PACK_ROOT).as_posix() for p in WORKFLOWS.glob("*.json")}
    wanted |= {p.relative_to(PACK_ROOT).as_posix() for p in WORKFLOWS.glob("*.jpg")}
    wanted |= {p.relative_to(PACK_ROOT).as_posix() for folder in RUNTIME[1:] for p in (PACK_ROOT / folder).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert sorted(wanted - published) == []


def test_every_pack_module_the_published_code_imports_is_published():
    """Nothing ComfyUI loads reaches for a folder .comfyignore left out (devtools/, training/, ...)."""
    published = published_files()
    missing = set()
    for path in sorted(p for p in published if p.endswith(".py")):
        package = path.split("/")[:-1]  # what `.` means in this file, below the pack's root
        for node in ast.walk(ast.parse((PACK_ROOT / path).read_text(), path)):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
                modules = [base] if node.module else [base + [alias.name] for alias in node.names]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                found = [node.module] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
                modules = [name.split(".")[1:] for name in found if name and name.split(".")[0] == "diffusion_blocks"]
            else:
                continue
            for parts in modules:  # a module of the pack is parts.py or parts/__init__.py; other names are attributes
                files = {"/".join(parts) + ".py", "/".join([*parts, "__init__.py"])}
                if any((PACK_ROOT / f).is_file() for f in files) and not files & published:
                    missing.add(f"{path}: diffusion_blocks.{'.'.join(parts)}")
    assert sorted(missing) == []


# What the runtime may not do: run programs, evaluate strings as code, or unpickle arbitrary objects.
FORBIDDEN_MODULES = {"subprocess", "pty", "pickle", "marshal", "shelve", "dill", "cloudpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_OS = re.compile(r"system|popen|exec\w*|spawn\w*|fork\w*|posix_spawn\w*")


def unsafe_lines(source, filename="<source>"):
    """'line: what' for each unsafe construct in Python source."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{node.lineno}: from {node.module} import")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{node.lineno}: from os import {a.name}" for a in node.names if FORBIDDEN_OS.fullmatch(a.name)]
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"{node.lineno}: {func.id}()")
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                owner, name = func.value.id, func.attr
                if owner == "os" and FORBIDDEN_OS.fullmatch(name):
                    found.append(f"{node.lineno}: os.{name}()")
                if owner == "torch" and name == "load":
                    safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                               for k in node.keywords)
                    if not safe:
                        found.append(f"{node.lineno}: torch.load() without weights_only=True")
    return found


@pytest.mark.parametrize("source, what", [
    ("import subprocess\nsubprocess.run(['ls'])", "import subprocess"),
    ("from subprocess import run", "from subprocess import"),
    ("import os\nos.system('ls')", "os.system()"),
    ("from os import popen", "from os import popen"),
    ("eval('1 + 1')", "eval()"),
    ("exec('x = 1')", "exec()"),
    ("import pickle\npickle.load(open('f', 'rb'))", "import pickle"),
    ("import torch\ntorch.load('f.pt')", "torch.load() without weights_only=True"),
    ("import torch\ntorch.load('f.pt', weights_only=False)", "torch.load() without weights_only=True"),
])
def test_the_scan_finds_each_unsafe_construct(source, what):
    assert any(what in line for line in unsafe_lines(source)), unsafe_lines(source)


def test_the_scan_passes_what_is_safe():
    assert unsafe_lines("import torch, re\nm = torch.nn.Linear(1, 1).eval()\nre.compile('x')\n"
                        "torch.load('f.pt', map_location='cpu', weights_only=True)\nimport os\nos.path.join('a')") == []


def test_runtime_code_has_no_eval_exec_subprocess_os_system_or_unsafe_pickle_loading():
    files = [PACK_ROOT / top for top in RUNTIME if top.endswith(".py")]
    files += [p for top in RUNTIME if not top.endswith(".py") for p in sorted((PACK_ROOT / top).rglob("*.py"))]
    assert len(files) > 20
    problems = [f"{path.relative_to(PACK_ROOT)}:{line}" for path in files
                for line in unsafe_lines(path.read_text(), str(path))]
    assert problems == []


def test_no_published_python_file_runs_programs_or_evaluates_code():
    """The registry scans every file it is sent, not only what ComfyUI imports."""
    problems = [f"{path}:{line}" for path in sorted(published_files()) if path.endswith(".py")
                for line in unsafe_lines((PACK_ROOT / path).read_text(), path)]
    assert problems == []
