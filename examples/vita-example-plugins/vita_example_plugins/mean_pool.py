"""``mean_pool_splice``: average every ``factor`` consecutive vision tokens, then splice (no torch at import).

A fusion strategy has two jobs that must agree: ``reduced_tokens`` predicts, before anything is encoded,
how many tokens each tile or frame keeps (the pipeline sizes its budget check with it), and ``reduce``
produces exactly that many from the projected features. Both use ``ceil(tokens / factor)``: a last, shorter
group is averaged over the tokens it has, so no token is dropped and none is padded in. Splicing is the
framework's public :class:`vita_framework.fusion.SpliceFusion`, reused as is.

Pooling runs along the token order (row-major for InternViT's 16x16 grid, so groups of 4 are horizontal
neighbours); it needs no square grid, so it also works after a projector that changed the token count.
Only the ``image`` placeholder stream (image tiles and video frames) is pooled; every other stream (audio, or a
plugin modality's own such as ``depth``) passes through unchanged, and ``reduced_tokens`` says so too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vita_framework.fusion import SpliceFusion

#: the placeholder stream this fusion pools (image tiles and video frames share it)
POOLED_STREAM = "image"


@dataclass
class MeanPoolOptions:
    factor: int = 4  # tokens averaged into one; 1 = plain splice


def pooled_count(tokens: int, factor: int) -> int:
    """Tokens left after pooling ``tokens`` by ``factor`` (the single formula both methods use)."""
    return -(-tokens // factor)


class MeanPoolSpliceFusion(SpliceFusion):
    """Mean-pool image tiles and video frames along the token axis; ``fuse`` is the splice's."""

    def __init__(self, factor: int = 4) -> None:
        self.factor = factor

    def reduced_tokens(self, stream: str, tokens: list[int], groups: list[int]) -> list[int]:
        if stream != POOLED_STREAM:
            return list(tokens)
        return [pooled_count(count, self.factor) for count in tokens]

    def reduce(self, stream: str, features: list[Any], groups: list[int]) -> list[Any]:
        if stream != POOLED_STREAM or self.factor == 1:
            return features
        return [_mean_pool(feat, self.factor, stream) for feat in features]


def _mean_pool(feat: Any, factor: int, stream: str) -> Any:
    """``[tokens, C] -> [ceil(tokens / factor), C]``; sums in float32 so bfloat16 features pool accurately."""
    import torch
    import torch.nn.functional as F

    from vita_framework.errors import FusionError

    if feat.dim() != 2:
        raise FusionError(f"{stream}: mean pooling needs [tokens, C] features; got shape {tuple(feat.shape)}")
    tokens, width = int(feat.shape[0]), int(feat.shape[1])
    if tokens == 0:
        return feat
    kept = pooled_count(tokens, factor)
    pad = kept * factor - tokens
    sums = F.pad(feat.float(), (0, 0, 0, pad)).reshape(kept, factor, width).sum(dim=1)
    counts = torch.full((kept, 1), float(factor), device=feat.device)
    counts[-1] = factor - pad
    return (sums / counts).to(feat.dtype)


def build_mean_pool_splice(options: MeanPoolOptions, context: Any) -> MeanPoolSpliceFusion:
    """The factory: reject a factor that would divide by zero or grow the sequence."""
    from vita_framework.errors import ConfigError

    if options.factor < 1:
        raise ConfigError(f"fusion.factor must be >= 1; got {options.factor}")
    return MeanPoolSpliceFusion(options.factor)
