"""Headless Chromium for the browser tests: Debian's `chromium` package, driven by playwright from PyPI.

Playwright's own browser download (`playwright install`) fetches a browser build from outside the package
registries, which fails where only those are reachable, so the tests use the system's Chromium instead
(playwright's wheel carries its driver). `chromium()` finds it or installs it once with
`apt-get install -y chromium` (root, Debian/Ubuntu); the outcome of a failed attempt is recorded in
.cache/chromium-install.txt and not retried on every run (delete that file to try again), and the caller is
told why, so a test can skip with that reason where Chromium cannot be had.
"""
import os
import shutil
import subprocess
from pathlib import Path

from .paths import CACHE

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
FAILED_INSTALL = CACHE / "chromium-install.txt"
# Headless, no sandbox (root in CI), and no network of its own: no updates, sync, QUIC or first-run pages.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
INSTALL_TIMEOUT = 900  # seconds: apt-get update and some 100 MB of packages


def installed():
    """The path of the system's Chromium, or None."""
    return next((Path(path) for path in CANDIDATES if Path(path).exists()), None)


def install():
    """Install Debian's `chromium` with apt-get; returns None on success, else why it failed."""
    if not shutil.which("apt-get"):
        return "apt-get is not available here (not Debian or Ubuntu)"
    if os.geteuid() != 0:
        return "apt-get needs root to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(command)}` took more than {INSTALL_TIMEOUT} s"
        if done.returncode != 0:
            return f"`{' '.join(command)}` failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}"
    return None if installed() else f"apt-get installed `chromium`, but there is no {' or '.join(CANDIDATES)}"


def chromium():
    """(path, None) of the system's Chromium, installing it once if needed, or (None, why it cannot be had)."""
    found = installed()
    if found:
        return found, None
    if FAILED_INSTALL.exists():
        return None, f"{FAILED_INSTALL.read_text().strip()} (recorded in {FAILED_INSTALL}; delete it to try again)"
    print("[browser] installing Debian's chromium package (apt-get install -y chromium)", flush=True)
    failure = install()
    if failure is None:
        return installed(), None
    reason = f"Chromium could not be installed: {failure}; install Debian's chromium package (apt-get install chromium)"
    FAILED_INSTALL.parent.mkdir(parents=True, exist_ok=True)
    FAILED_INSTALL.write_text(reason + "\n")
    return None, reason
