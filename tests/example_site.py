"""The example plugin package (examples/vita-example-plugins) installed for real, and processes run against it.

pip builds and installs the package into a tmp dir (``--target``, offline, no dependencies), which subprocesses
get on PYTHONPATH: the shared venv is never touched, yet importlib.metadata, pluggy and Hydra find the package
exactly as they would after ``pip install``. Shared by ``test_example_plugin.py`` and ``test_example_modality.py``.

Every process spends most of its ~10 s importing torch, so a test module starts its runs together
(:func:`start`) and each test waits only for its own (:meth:`Run.wait`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import ROOT

PACKAGE_SRC = ROOT / "examples" / "vita-example-plugins"
DIST, VERSION, ENTRY_POINT = "vita-example-plugins", "0.1.0", "vita_example"
TIMEOUT_S = 300


def clean_env(site: Path | None) -> dict[str, str]:
    """The caller's environment minus VITA_* switches and PYTHONPATH, plus the package's site if given.

    One torch thread per process: the runs share the machine's cores, and oversubscribed threads are slower.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITA_") and k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return env


def install_example(base: Path) -> Path:
    """Install the package with pip into ``<base>/site``, offline; returns that directory.

    pip builds a local directory in place (``build/``, ``*.egg-info``), so it builds a copy: the source tree
    stays clean and concurrent test runs do not share a build directory.
    """
    src = base / "src"
    shutil.copytree(PACKAGE_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = base / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(src)],
        env=clean_env(None), capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target


@dataclass
class Run:
    """One Python process started in the background; ``wait`` collects it. ``run_dir``: its Hydra output dir."""

    process: subprocess.Popen
    out: Path
    err: Path
    run_dir: Path | None = None

    def wait(self) -> subprocess.CompletedProcess:
        try:
            self.process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        return subprocess.CompletedProcess(self.process.args, self.process.returncode,
                                           self.out.read_text(), self.err.read_text())

    def succeeded(self) -> dict[str, Any]:
        """Wait, require exit status 0, and return the run's result.json (a CLI run) or its stdout as JSON."""
        done = self.wait()
        assert done.returncode == 0, done.stdout + done.stderr
        if self.run_dir is not None:
            return json.loads((self.run_dir / "result.json").read_text())
        return json.loads(done.stdout.strip().splitlines()[-1])


def start(base: Path, name: str, args: Sequence[str], *, site: Path | None, cli: bool = True) -> Run:
    """Start ``python -m vita_framework <args> hydra.run.dir=<base>/<name>`` (``cli=False``: ``python <args>``).

    Files, not pipes, hold the output, so no pipe can fill up while nobody reads it.
    """
    run_dir = base / name if cli else None
    command = [sys.executable, "-m", "vita_framework", *args, f"hydra.run.dir={run_dir}"] if cli \
        else [sys.executable, *args]
    out, err = base / f"{name}.out", base / f"{name}.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(command, cwd=base, env=clean_env(site), stdout=stdout, stderr=stderr, text=True)
    return Run(process, out, err, run_dir)


def stop(runs: dict[str, Run]) -> None:
    """Kill the runs no test waited for (a failed test must not leave processes behind)."""
    for run in runs.values():
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


@contextmanager
def imported_from(site: Path, monkeypatch: Any) -> Iterator[None]:
    """Make the installed package importable in this process; forget it afterwards so no later test sees it."""
    for name in [n for n in os.environ if n.startswith("VITA_")]:  # VITA_BLOCK_PLUGINS etc. would skew loading
        monkeypatch.delenv(name)
    monkeypatch.syspath_prepend(str(site))
    try:
        yield
    finally:
        for name in [n for n in sys.modules if n == "vita_example_plugins" or n.startswith("vita_example_plugins.")]:
            del sys.modules[name]


def ours(problems: list[str]) -> list[str]:
    """Load problems caused by this package (other plugins installed in the venv are not these files' test)."""
    return [p for p in problems if DIST in p or f"'{ENTRY_POINT}'" in p]
