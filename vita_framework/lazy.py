"""A component built on first use: VITA-1.5 with audio costs nothing for a request without audio.

``+experiment=vita15`` configures the whale encoder (the whole of VITA-1.5) but lists ``audio`` in ``lazy``: the
builder hands the pipeline a :class:`LazyComponent`, and the encoder's weights are read the first time a request
with audio touches it. Only components nothing else is derived from may be lazy (a projector reads the vision
encoder's width at build time); the run validator checks that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class LazyComponent:
    """Stands in for a component until an attribute is read; then builds it (once, thread-safe) and delegates."""

    def __init__(self, kind: str, build: Callable[[], Any]) -> None:
        self._kind = kind
        self._build = build
        self._component: Any = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._component is not None

    def materialise(self) -> Any:
        if self._component is None:
            with self._lock:
                if self._component is None:
                    self._component = self._build()
        return self._component

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.materialise(), name)

    def __repr__(self) -> str:
        state = type(self._component).__name__ if self._component is not None else "not built yet"
        return f"LazyComponent({self._kind}: {state})"


def materialise(component: Any) -> Any:
    """The real component behind a possibly lazy one."""
    return component.materialise() if isinstance(component, LazyComponent) else component
