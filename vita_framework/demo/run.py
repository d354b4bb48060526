"""``python -m vita_framework.demo``'s job body: check the ``demo`` options, build the pipeline exactly as the CLI
and the server do, start the scheduler and the page, log the URL, and serve until stopped."""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any

log = logging.getLogger("vita_framework.demo")


def run_job(cfg: Any) -> None:
    from ..errors import VitaError

    try:
        serve_demo(cfg)
    except VitaError as exc:
        if os.environ.get("VITA_DEBUG"):
            raise
        log.error("error: %s", exc)
        sys.exit(2)


def serve_demo(cfg: Any) -> None:
    from ..builder import build_pipeline
    from ..serve.options import ServeOptions
    from ..serve.run import model_name
    from .app import create_demo, launch
    from .chat import DemoChat
    from .options import demo_options
    from .panels import composition_rows

    options = demo_options(cfg.get("demo"))  # a misspelt demo option costs nothing: checked before any build
    port = options.port or free_port(options.host)
    check_port(options.host, port)
    pipeline = build_pipeline(cfg, serving=True)
    if str(cfg.get("checkpoint")) == "default":
        from ..cli import default_bundle_note

        log.info(default_bundle_note())
    name = model_name(cfg, ServeOptions())
    chat = DemoChat(pipeline, options)
    demo = create_demo(chat, composition_rows(cfg, pipeline), model_name=name)
    chat.start()
    try:
        url = launch(demo, options.host, port)
        log.info("demo of '%s' on %s (Ctrl+C stops it)", name, url)
        demo.block_thread()
    finally:
        chat.stop()
        demo.close()


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port(host: str, port: int) -> None:
    """Refuse, before the model is built, an address that cannot be listened on (a port in use, a bad host)."""
    from ..errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another "
            "demo.port=<port> (0 picks a free one) or demo.host"
        ) from None
