"""Helpers of the demo tests: the demo app run as a subprocess on a free port, the real CLI's answer, and a
headless Chromium (Debian's package, installed with apt-get when missing) driven by Playwright.

Playwright never downloads a browser here: it is pointed at ``/usr/bin/chromium``. When that is missing, the
session fixture :func:`chromium` installs Debian's ``chromium`` with ``apt-get`` once (under a file lock, so
parallel workers wait for one install) and FAILS with the reason when it cannot: the browser test never skips.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT
from debian import ensure_package

CHROMIUM = Path(os.environ.get("VITA_CHROMIUM", "/usr/bin/chromium"))
#: what Chromium needs on a closed network, as root, without a screen (no sandbox, no background connections)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SAMPLE = ROOT / "vita_framework" / "assets" / "sample.png"
BASE = ("+vision=internvit", "+audio=none")
_READY = re.compile(r"demo of '[^']+' on (http://127\.0\.0\.1:\d+)")


def env() -> dict[str, str]:
    out = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        PYTHONUNBUFFERED="1",
        GRADIO_ANALYTICS_ENABLED="False",
    )
    out.pop("VITA_DEBUG", None)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DemoProcess:
    """``python -m vita_framework.demo <overrides> demo.port=<free>``; its log is collected in ``lines``."""

    def __init__(self, overrides: tuple[str, ...], out_dir: Path) -> None:
        self.port = free_port()
        self.lines: list[str] = []
        cmd = [
            sys.executable,
            "-m",
            "vita_framework.demo",
            *overrides,
            f"demo.port={self.port}",
            f"hydra.run.dir={out_dir}",
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.url: str | None = None
        self._found = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            found = _READY.search(line)
            if found:
                self.url = found.group(1)
                self._found.set()
        self._found.set()

    def wait_ready(self, timeout: float = 240.0) -> str:
        self._found.wait(timeout)
        if self.url is None:
            self.stop()
            pytest.fail("the demo did not log its URL:\n" + "".join(self.lines[-40:]))
        return self.url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextlib.contextmanager
def demo_app(out_dir: Path, *overrides: str):
    """The demo starting with ``overrides`` (default: the embedded bundle with a vision encoder); yields the
    process at once (``wait_ready()`` gives its URL), so a test can run the CLI while the app starts."""
    app = DemoProcess(overrides or BASE, out_dir)
    try:
        yield app
    finally:
        app.stop()


def cli_answer(out_dir: Path, *args: str) -> str:
    """The real CLI's answer (``python -m vita_framework ... stream=false``: the answer alone on stdout)."""
    done = subprocess.run(
        [sys.executable, "-m", "vita_framework", *args, "stream=false", f"hydra.run.dir={out_dir}"],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# -- Chromium ------------------------------------------------------------------------------------------------
def ensure_chromium() -> Path:
    """``/usr/bin/chromium`` (or ``$VITA_CHROMIUM``), installed from Debian's archive when missing."""
    return ensure_package(CHROMIUM, "chromium", "the browser test")


@pytest.fixture(scope="session")
def chromium() -> Path:
    return ensure_chromium()


@contextlib.contextmanager
def browser_page(binary: Path, width: int = 1280, height: int = 900):
    """A page of a fresh headless Chromium (Playwright's sync API, a new profile) with a fake microphone (a test
    tone); external requests are refused and listed in ``page.external_requests`` (the demo must need nothing
    from outside the machine)."""
    from playwright.sync_api import sync_playwright

    microphone = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(binary), headless=True, args=[*CHROMIUM_FLAGS, *microphone], chromium_sandbox=False
        )
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, permissions=["microphone"])
            external: list[str] = []

            def route(r) -> None:
                host = re.match(r"^[a-z]+://([^/:]+)", r.request.url)
                if host and host.group(1) not in ("127.0.0.1", "localhost"):
                    external.append(r.request.url)
                    r.abort()
                else:
                    r.continue_()

            context.route("**/*", route)
            page = context.new_page()
            page.external_requests = external
            yield page
        finally:
            browser.close()


def wait_until(condition, timeout: float = 60.0, every: float = 0.05, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
