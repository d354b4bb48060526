"""The ``demo`` config node (``conf/demo/default.yaml``), checked like the ``serve`` node: unknown keys with a
did-you-mean, wrong types and values reported at once, before any model is built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class DemoOptions:
    host: str = "127.0.0.1"
    port: int = 7860
    max_upload_mb: float = 50.0
    max_batch_size: int = 8
    batch_wait_ms: float = 10.0
    max_queue: int = 64
    encoder_cache_mb: float = 256.0
    prefix_cache_mb: float = 64.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    def problems(self) -> list[str]:
        out = []
        if not 0 <= self.port <= 65535:
            out.append(f"demo.port must be in 0..65535 (0: a free port); got {self.port}")
        if not self.max_upload_mb > 0:
            out.append(f"demo.max_upload_mb must be > 0; got {self.max_upload_mb}")
        for name in ("max_batch_size", "max_queue"):
            if getattr(self, name) < 1:
                out.append(f"demo.{name} must be >= 1; got {getattr(self, name)}")
        for name in ("batch_wait_ms", "encoder_cache_mb", "prefix_cache_mb"):
            if getattr(self, name) < 0:
                out.append(f"demo.{name} must be >= 0; got {getattr(self, name)}")
        if not str(self.host).strip():
            out.append("demo.host is empty; give an address to listen on (127.0.0.1: this machine only)")
        return out


def demo_options(node: Any) -> DemoOptions:
    """The checked :class:`DemoOptions` of a config's ``demo`` node (None: the defaults)."""
    from ..serve.options import checked_options

    return checked_options(node, DemoOptions, "demo")
