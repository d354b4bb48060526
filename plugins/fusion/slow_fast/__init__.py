"""Slow-fast fusion: VITA-1.5's video token pooling, then the splice fusion.

A video of 16 frames costs 4096 positions at 256 tokens per frame. VITA's ``slow_fast_pooling``
(``vita_arch.py``) keeps every 4th frame of a video at 12x12 = 144 tokens ("slow") and shrinks the others to
7x7 = 49 ("fast"), by a bilinear resample of the 16x16 token grid after the projector: 16 frames -> 1164
positions. Still-image tiles are left alone. The splice step afterwards is unchanged, so the prompt needs
one placeholder per pooled token (144/49 per frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vita_framework.fusion import SpliceFusion
from vita_framework.hookspecs import hookimpl


@dataclass
class SlowFastOptions:
    stride: int = 4  # frames 0, stride, 2*stride, ... of each video are slow
    slow_size: int = 12  # slow frames keep a slow_size x slow_size token grid
    fast_size: int = 7  # the other frames keep fast_size x fast_size

    def __post_init__(self) -> None:
        for name in ("stride", "slow_size", "fast_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"fusion.{name} must be >= 1; got {getattr(self, name)}")


class SlowFastFusion(SpliceFusion):
    """Pool each video's frames slow/fast (``groups``: 0 = still image tile, k > 0 = frame of video k)."""

    def __init__(self, stride: int = 4, slow_size: int = 12, fast_size: int = 7) -> None:
        self.stride, self.slow_size, self.fast_size = stride, slow_size, fast_size

    def tokens_per_frame(self, position: int) -> int:
        """Tokens a frame keeps, from its position inside its video (for prompt sizing)."""
        side = self.slow_size if position % self.stride == 0 else self.fast_size
        return side * side

    def reduced_tokens(self, stream: str, tokens: list[int], groups: list[int]) -> list[int]:
        out, position = [], 0
        for i, (count, group) in enumerate(zip(tokens, groups)):
            position = position + 1 if i > 0 and group == groups[i - 1] else 0
            out.append(count if group <= 0 else self.tokens_per_frame(position))
        return out

    def reduce(self, stream: str, features: list[Any], groups: list[int]) -> list[Any]:
        """Pool every maximal run of equal ``k > 0`` in ``groups`` as one video; order is preserved.

        As the reference, two consecutive videos must carry different ids to restart the slow/fast pattern.
        """
        from vita_framework.errors import FusionError

        if len(groups) != len(features):
            raise FusionError(f"{stream}: {len(features)} feature tensors but {len(groups)} group ids")
        out: list[Any] = []
        position = 0
        for i, (feat, group) in enumerate(zip(features, groups)):
            position = position + 1 if i > 0 and group == groups[i - 1] else 0
            if group <= 0:
                out.append(feat)
                continue
            side = self.slow_size if position % self.stride == 0 else self.fast_size
            out.append(_resample_grid(feat, side, stream))
        return out


def _resample_grid(feat: Any, side: int, modality: str) -> Any:
    """``[t, C]`` (a row-major sqrt(t) x sqrt(t) token grid) -> ``[side*side, C]`` by bilinear resampling.

    ``align_corners=False`` and no antialias, as the reference ``pool_feats``: a resample, not an average.
    """
    import torch.nn.functional as F

    from vita_framework.errors import FusionError

    tokens, width = int(feat.shape[0]), int(feat.shape[-1])
    grid = math.isqrt(tokens)
    if feat.dim() != 2 or grid * grid != tokens:
        raise FusionError(f"{modality}: slow-fast pooling needs [tokens, C] features with a square token "
                          f"grid; got shape {tuple(feat.shape)}")
    if side == grid:
        return feat
    x = feat.reshape(1, grid, grid, width).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(side * side, width)


def build_slow_fast(options: SlowFastOptions, context: Any) -> SlowFastFusion:
    return SlowFastFusion(options.stride, options.slow_size, options.fast_size)


@hookimpl
def vita_register_fusion_strategies(register):
    register("slow_fast", build_slow_fast, schema=SlowFastOptions,
             description="VITA slow-fast video pooling (every stride-th frame slow_size^2 tokens, others "
                         "fast_size^2), then splice")
