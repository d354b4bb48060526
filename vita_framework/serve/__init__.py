"""An OpenAI-compatible HTTP server over the pipeline: ``python -m vita_framework.serve <the CLI's overrides>``.

Modules: :mod:`~.options` (the ``serve`` config node), :mod:`~.protocol` (OpenAI's request and response bodies,
errors), :mod:`~.chat` (a conversation as a request: multi-turn rendering, protected client text),
:mod:`~.scheduler` (dynamic batching on one engine thread), :mod:`~.metrics` (Prometheus), :mod:`~.app` (the
FastAPI routes), :mod:`~.run` (uvicorn, a server in a thread), :mod:`~.ray_app` (Ray Serve replicas).
FastAPI and uvicorn come with the ``serve`` extra (``pip install -e '.[serve]'``); importing this package needs
neither.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeOptions", "create_app"]


def create_app(pipeline: Any, options: Any = None, **kwargs: Any) -> Any:
    """The FastAPI app serving ``pipeline`` (see :func:`vita_framework.serve.app.create_app`)."""
    from .app import create_app as _create_app

    return _create_app(pipeline, options, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "ServeOptions":
        from .options import ServeOptions

        return ServeOptions
    raise AttributeError(name)
