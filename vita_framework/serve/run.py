"""Running the app: the Hydra job body (local uvicorn or Ray Serve), and a server in a thread for tests and
benchmarks."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from .options import ServeOptions, serve_options

log = logging.getLogger("vita_framework.serve")


def run_job(cfg: Any) -> None:
    """``python -m vita_framework.serve``'s job: build the configured pipeline and serve it until stopped."""
    from ..errors import VitaError

    try:
        options = serve_options(cfg.get("serve"))
        if options.engine == "ray":
            from .ray_app import run_ray

            run_ray(cfg, options)
            return
        from ..builder import build_pipeline

        pipeline = build_pipeline(cfg, serving=True)
        serve_forever(pipeline, options, model_name(cfg, options))
    except VitaError as exc:
        if os.environ.get("VITA_DEBUG"):
            raise
        log.error("error: %s", exc)
        sys.exit(2)


def model_name(cfg: Any, options: ServeOptions) -> str:
    """The served model's id: ``serve.model_name``, else from the checkpoint (``vita-default`` for the
    embedded bundle, the directory's name for a bundle, ``vita-random`` without one)."""
    if options.model_name:
        return str(options.model_name)
    checkpoint = cfg.get("checkpoint")
    if checkpoint is None or str(checkpoint).lower() in ("null", "none", "random"):
        return "vita-random"
    if str(checkpoint) == "default":
        return "vita-default"
    return Path(str(checkpoint)).expanduser().resolve().name or "vita"


def bind(host: str, port: int) -> tuple[socket.socket, str]:
    """A listening socket on ``host:port`` (0: a free port) and the URL it answers on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        from ..errors import ConfigError

        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another "
                          "serve.port=<port> (0 picks a free one) or serve.host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return sock, f"http://{shown}:{bound}"


def serve_forever(pipeline: Any, options: ServeOptions, name: str) -> None:
    import uvicorn

    from .app import create_app

    sock, url = bind(options.host, options.port)
    ready = f"serving '{name}' on {url} (OpenAI API base URL: {url}/v1)"
    app = create_app(pipeline, options, model_name=name, ready_message=ready)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


class ServerThread:
    """An app served by uvicorn in a background thread on ``host`` and a free port (tests, benchmarks)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.sock, self.url = bind(host, port)
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])),
                                       name="vita-serve-http", daemon=True)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> ServerThread:
        import time

        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
