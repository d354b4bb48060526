"""Debian packages a test needs (Chromium for the browser test, espeak-ng for speech): installed with apt-get
when missing, once per machine, under a file lock (several test workers may ask at the same time). A machine
without apt-get, or a user who is not root, gets a failure saying what to install -- never a skip."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


def ensure_package(binary: Path, package: str, why: str) -> Path:
    """``binary`` (which ``--version`` must run), installing Debian's ``package`` when it is missing."""
    if runs(binary):
        return binary
    lock_path = Path(tempfile.gettempdir()) / f"vita-{package}-install.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be installing it right now: wait for it
        if runs(binary):
            return binary
        if shutil.which("apt-get") is None:
            pytest.fail(f"{why} needs {binary} and there is no apt-get to install it; install Debian's or your "
                        f"distribution's {package} package")
        if os.geteuid() != 0:
            pytest.fail(f"{why} needs {binary}; installing it needs root: run `sudo apt-get install -y {package}`")
        apt_env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for step in (["apt-get", "update"], ["apt-get", "install", "-y", package]):
            try:
                done = subprocess.run(step, env=apt_env, capture_output=True, text=True, timeout=900)
            except subprocess.TimeoutExpired:
                pytest.fail(f"`{' '.join(step)}` did not finish in 15 minutes; install {package} by hand")
            if done.returncode != 0:
                pytest.fail(f"{why} needs {package}; `{' '.join(step)}` failed (status {done.returncode}):\n"
                            f"{(done.stdout + done.stderr)[-3000:]}")
    if not runs(binary):
        pytest.fail(f"apt-get installed {package} but {binary} --version does not run")
    return binary


def runs(binary: Path) -> bool:
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return False
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
