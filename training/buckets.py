"""Rows of a training step grouped by length, so the question-and-answer segment is computed in a few buckets
each only as wide as its longest row (:meth:`vita_training.loop.Trainer.hidden`, ``length_buckets``).

Why: the answer to "How many shapes are there?" is one word, a description a dozen; padding every row of a
128-row step to the longest description computes about 40 % padding positions.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch


def rows_of(cache: Any, index: torch.Tensor) -> Any:
    """A copy of a transformers ``DynamicCache`` holding rows ``index`` of ``cache`` (differentiably): each
    length bucket extends its own, so the buckets do not see one another's keys."""
    picked = copy.copy(cache)
    picked.layers = []
    for layer in cache.layers:
        mine = copy.copy(layer)
        mine.keys, mine.values = layer.keys.index_select(0, index), layer.values.index_select(0, index)
        picked.layers.append(mine)
    return picked


def length_buckets(lengths: list[int], most: int = 3, overhead: int = 256) -> list[list[int]]:
    """Rows (indices into ``lengths``) split into at most ``most`` buckets by length, choosing the cut points
    that minimise the padded tokens the buckets compute (each bucket as wide as its longest row), where a
    further bucket must save more than ``overhead`` tokens (its own forward's fixed cost)."""
    order = sorted(range(len(lengths)), key=lambda r: lengths[r])
    values = [lengths[r] for r in order]
    cuts = [i for i in range(1, len(values)) if values[i] != values[i - 1]]

    def cost(bounds: list[int]) -> int:
        edges = [0, *bounds, len(values)]
        return sum((b - a) * values[b - 1] for a, b in itertools.pairwise(edges)) + overhead * len(bounds)

    best: list[int] = []
    for k in range(1, most):
        for bounds in map(list, itertools.combinations(cuts, k)):
            if cost(bounds) < cost(best):
                best = bounds
    edges = [0, *best, len(values)]
    return [sorted(order[a:b]) for a, b in itertools.pairwise(edges)]
