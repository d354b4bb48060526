"""Average-pooling baseline for visual-token reduction: each tile's token grid is pooled to ``keep`` of its size.

The simplest reduction there is (and the one the learned methods must beat): every tile or frame of the image
stream is an ``s x s`` grid of tokens after the projector, and adaptive average pooling shrinks it to about
``keep * s * s`` tokens (``rows x cols``, see :func:`vita_framework.token_reduction.pooled_grid`), before the
LLM sees anything. It keeps the grid's raster order; it cannot tell an object from the background.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vita_framework.fusion import SpliceFusion
from vita_framework.hookspecs import hookimpl
from vita_framework.token_reduction import check_keep, pooled_grid


@dataclass
class AvgPoolOptions:
    keep: float = 0.5  # fraction of each tile's tokens kept, in (0, 1]
    streams: list[str] = field(default_factory=lambda: ["image"])  # placeholder streams pooled (tiles and frames)

    def __post_init__(self) -> None:
        check_keep(self.keep)


class AvgPoolFusion(SpliceFusion):
    """Adaptive average pooling of each segment's token grid, then the splice fusion."""

    def __init__(self, keep: float, streams: list[str]) -> None:
        self.keep, self.streams = float(keep), list(streams)

    def reduced_tokens(self, stream: str, tokens: list[int], groups: list[int]) -> list[int]:
        if stream not in self.streams or self.keep >= 1.0:
            return list(tokens)
        return [rows * cols for rows, cols in (pooled_grid(n, self.keep) for n in tokens)]

    def reduce(self, stream: str, features: list[Any], groups: list[int]) -> list[Any]:
        from vita_framework.token_reduction import average_pool

        if stream not in self.streams or self.keep >= 1.0:
            return features
        return [average_pool(f, self.keep) for f in features]


def build_avgpool(options: AvgPoolOptions, context: Any) -> AvgPoolFusion:
    return AvgPoolFusion(options.keep, options.streams)


@hookimpl
def vita_register_fusion_strategies(register):
    register(
        "avgpool",
        build_avgpool,
        schema=AvgPoolOptions,
        description="visual-token reduction baseline: adaptive average pooling of each tile's token grid "
        "to `keep` of its tokens, then splice",
    )
