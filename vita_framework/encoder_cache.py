"""Encoded features by content hash: an item seen again is not encoded again.

OpenAI-style clients re-send every image of a conversation on every turn, and a batch file often asks several
questions about one picture. :class:`EncoderCache` keeps, per loaded item (an image, a video clip, an audio
clip), what the pipeline's front half computed for it: its segments, the rows each segment takes in the prompt,
and its features after the projector. The key is a framed hash of the item's *content*: a file's bytes (with the
loader's options), so a file sent again under another name or as a ``data:`` URL hits without being decoded; an
object in memory (a PIL image, an array) by its decoded content. The modality's name and the encoder's identity
are part of it, so two configurations never share features. Bounded by bytes (least recently
used entries go first); an item larger than the whole cache is not stored. Thread-safe: a server's engine
thread and its request threads may use one cache.

:class:`~vita_framework.preparation.RequestPreparer` consults it per item when a pipeline has one
(``Pipeline(encoder_cache_mb=...)`` or :meth:`~vita_framework.pipeline.Pipeline.set_encoder_cache`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: files larger than this (together, for a frame directory) are keyed by their decoded content instead
MAX_HASHED_BYTES = 256 * 2**20


@dataclass(frozen=True)
class CachedItem:
    """One item's front-half results: segments, planned prompt rows per segment, features per segment."""

    segments: int
    planned: tuple[int, ...]
    features: tuple[Any, ...]

    @property
    def nbytes(self) -> int:
        return sum(int(f.numel()) * int(f.element_size()) for f in self.features)


class EncoderCache:
    """A bounded LRU of :class:`CachedItem` by content key, with hit statistics."""

    def __init__(self, max_mb: float) -> None:
        if not max_mb > 0:
            raise ValueError(f"encoder cache size must be > 0 MB; got {max_mb}")
        self.max_bytes = int(float(max_mb) * 2**20)
        self._items: OrderedDict[str, CachedItem] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.queries = self.hits = self.evictions = 0

    @staticmethod
    def key(namespace: str, item: Any) -> str:
        """The content key of ``item`` (a loaded input) under ``namespace`` (modality and encoder)."""
        h = hashlib.blake2b(digest_size=20)
        _frame(h, b"ns", namespace.encode())
        _feed(h, item)
        return h.hexdigest()

    @staticmethod
    def source_key(namespace: str, source: Any, options: dict[str, Any]) -> str | None:
        """The key of a file (or a directory of files) by its bytes and the loader's ``options``, so a hit needs
        no decoding; None for anything else (an object in memory, a missing path, a file over 256 MB)."""
        if not isinstance(source, (str, os.PathLike)):
            return None
        try:
            path = Path(source).expanduser()
            files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file()) \
                if path.is_dir() else []
            if not files or sum(f.stat().st_size for f in files) > MAX_HASHED_BYTES:
                return None
            h = hashlib.blake2b(digest_size=20)
            _frame(h, b"ns", namespace.encode())
            _feed(h, options)
            for file in files:
                _frame(h, b"name", file.name.encode("utf-8", "surrogatepass") if file != path else b"")
                with open(file, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                _frame(h, b"end", b"")
        except (OSError, ValueError):
            return None
        return "file:" + h.hexdigest()

    def get(self, key: str) -> CachedItem | None:
        with self._lock:
            self.queries += 1
            item = self._items.get(key)
            if item is not None:
                self.hits += 1
                self._items.move_to_end(key)
            return item

    def put(self, key: str, item: CachedItem) -> bool:
        """Store ``item`` (evicting the least recently used); False when it alone exceeds the cache."""
        size = item.nbytes
        if size > self.max_bytes:
            return False
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = item
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes
                self.evictions += 1
        return True

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"items": len(self._items), "bytes": self._bytes, "max_bytes": self.max_bytes,
                    "queries": self.queries, "hits": self.hits, "evictions": self.evictions}


# -- content hashing: every chunk is tagged and length-prefixed, so different structures cannot collide ----------
def _frame(h: Any, tag: bytes, payload: bytes) -> None:
    h.update(tag)
    h.update(len(payload).to_bytes(8, "little"))
    h.update(payload)


def _feed(h: Any, obj: Any) -> None:
    if obj is None or isinstance(obj, (bool, int, float, complex)):
        _frame(h, b"scalar", repr((type(obj).__name__, obj)).encode())
    elif isinstance(obj, str):
        _frame(h, b"str", obj.encode("utf-8", "surrogatepass"))
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _frame(h, b"bytes", bytes(obj))
    elif hasattr(obj, "tobytes") and hasattr(obj, "mode") and hasattr(obj, "size"):  # a PIL image
        _frame(h, b"pil", repr((obj.mode, tuple(obj.size))).encode())
        palette = obj.getpalette() if obj.mode in ("P", "PA") else None
        if palette:
            _frame(h, b"palette", bytes(palette))
        _frame(h, b"pixels", obj.tobytes())
    elif type(obj).__module__ == "numpy" or type(obj).__name__ == "ndarray":
        import numpy as np

        array = np.ascontiguousarray(obj)
        _frame(h, b"ndarray", repr((str(array.dtype), array.shape)).encode())
        _frame(h, b"data", array.view(np.uint8).tobytes() if array.size else b"")
    elif type(obj).__module__.startswith("torch") and hasattr(obj, "dtype") and hasattr(obj, "shape"):
        import torch

        tensor = obj.detach().to("cpu").contiguous()
        _frame(h, b"tensor", repr((str(tensor.dtype), tuple(tensor.shape))).encode())
        _frame(h, b"data", tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(obj, (list, tuple)):
        _frame(h, b"seq", repr((type(obj).__name__, len(obj))).encode())
        for value in obj:
            _feed(h, value)
    elif isinstance(obj, dict):
        _frame(h, b"dict", str(len(obj)).encode())
        for name in sorted(obj, key=repr):
            _feed(h, name)
            _feed(h, obj[name])
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _frame(h, b"dataclass", f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
        for f in dataclasses.fields(obj):
            _feed(h, f.name)
            _feed(h, getattr(obj, f.name))
    else:
        warnings.warn(f"encoder cache: hashing a {type(obj).__name__} through pickle", stacklevel=3)
        _frame(h, b"pickle", pickle.dumps(obj, protocol=4))
