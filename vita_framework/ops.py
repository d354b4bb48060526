"""Tensor operations several encoders share (imports torch: use from factories and model code only)."""

from __future__ import annotations

from typing import Any

from .errors import ConfigError


def pixel_shuffle(features: Any, ratio: float) -> Any:
    """``[P, N, C]`` on a square grid -> ``[P, N*ratio^2, C/ratio^2]``.

    For ratio 0.5, output token (r, c) concatenates input tokens (2r,2c), (2r,2c+1), (2r+1,2c), (2r+1,2c+1),
    in InternVL's order, which VITA's trained projector expects.
    """
    tiles, tokens, channels = features.shape
    side = int(round(tokens ** 0.5))
    if side * side != tokens:
        raise ConfigError(f"pixel shuffle needs a square token grid; got {tokens} tokens")
    x = features.reshape(tiles, side, side, channels)
    x = x.view(tiles, side, int(side * ratio), int(channels / ratio))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.view(tiles, int(side * ratio), int(side * ratio), int(channels / (ratio * ratio)))
    x = x.permute(0, 2, 1, 3).contiguous()
    return x.reshape(tiles, -1, x.shape[-1])
