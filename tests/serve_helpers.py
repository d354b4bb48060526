"""Helpers of the server tests: a real server on 127.0.0.1 (a free port), raw HTTP calls, media as data URLs."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
from typing import Any
from urllib.parse import urlparse

BASE = ("+vision=internvit", "+audio=none")


@contextlib.contextmanager
def serving(pipe: Any, **options: Any):
    """``create_app(pipe, ServeOptions(**options))`` served in a thread; yields (url, app)."""
    from vita_framework.serve.app import create_app
    from vita_framework.serve.options import ServeOptions
    from vita_framework.serve.run import ServerThread

    before = pipe.encoder_cache
    app = create_app(pipe, ServeOptions(**options), model_name="vita-default")
    try:
        with ServerThread(app) as server:
            yield server.url, app
    finally:
        pipe.preparer.encoder_cache = before


def call(url: str, path: str, body: Any = None, *, method: str = "POST", headers: dict[str, str] | None = None,
         raw: bytes | None = None, timeout: float = 120.0) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body or text) of one request."""
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    try:
        payload: Any = json.loads(text)
    except ValueError:
        payload = text
    return response.status, {k.lower(): v for k, v in response.getheaders()}, payload


def chat(url: str, messages: list[dict[str, Any]], **params: Any) -> tuple[int, Any]:
    status, _, body = call(url, "/v1/chat/completions", {"model": "vita-default", "messages": messages, **params})
    return status, body


def answer(body: Any) -> str:
    return body["choices"][0]["message"]["content"]


def png_url(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def file_url(path: Any, mime: str) -> str:
    with open(path, "rb") as f:
        return f"data:{mime};base64," + base64.b64encode(f.read()).decode()


def image_question(url: str, question: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": question}]}]


def is_error_object(body: Any) -> bool:
    return isinstance(body, dict) and set(body) == {"error"} and \
        set(body["error"]) == {"message", "type", "param", "code"}


def write_clip(path: Any) -> Any:
    """An 8-frame 64x64 MPEG-4 clip at 4 fps (frames of rising grey), written to ``path``; returns ``path``."""
    from fractions import Fraction

    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=Fraction(4, 1))
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(8):
            frame = np.full((64, 64, 3), 30 * i, dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path
