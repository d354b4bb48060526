"""Preparing a stage's batches in worker processes while the main process trains on the previous ones.

Why: a vision warm-up step renders 16 scenes and their region labels (about a quarter of the step on one
core) before a tower step that is too small to use a second core's threads well; rendered by a worker on the
other core, that time is hidden. Every batch is a pure function of its step index (the scenes are drawn from
their index), so a run gives the same batches with or without workers. The loader seeds its workers from a
generator of its own: drawn from the global RNG, that seed would shift every later draw from it (the speech
warm-up's head), and a run with workers would no longer give the bytes of one without.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class _Steps:
    """Step ``i``'s batch, made on demand (a map-style dataset for ``torch.utils.data.DataLoader``)."""

    def __init__(self, make: Callable[[int], Any], steps: int) -> None:
        self.make, self.steps = make, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> Any:
        return self.make(step)


def _one_thread(_: int) -> None:
    import torch

    torch.set_num_threads(1)  # a worker renders; the cores' threads are the trainer's


def batches(make: Callable[[int], T], steps: int, workers: int = 0) -> Iterator[T]:
    """``make(0) .. make(steps - 1)`` in order; with ``workers`` > 0 made ahead by that many forked processes
    (a few batches ahead each), so the caller's training overlaps their making."""
    if workers <= 0:
        yield from (make(step) for step in range(steps))
        return
    import torch

    loader = torch.utils.data.DataLoader(_Steps(make, steps), batch_size=None, shuffle=False, num_workers=workers,
                                         prefetch_factor=4, multiprocessing_context="fork",
                                         worker_init_fn=_one_thread, generator=torch.Generator().manual_seed(0))
    yield from loader
