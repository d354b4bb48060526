"""Masked bands and stretches of a training clip's filterbank features (``speech.specaugment``).

Why: the audio encoder hears 56 voices during training and must understand a voice it never heard. Hiding a
random band of mel bins makes it tell words from several parts of the spectrum rather than from where one
voice's formants happen to lie, and hiding a random stretch of frames makes it use the whole utterance. The
masked values are the encoder's CMVN mean, so after its input normalisation they are zero. ``warp`` stretches or
squeezes the mel-bin axis of a clip by a random factor, moving its formants as a longer or shorter vocal tract
would (vocal tract length perturbation, done on the features): the speakers a few dozen voices leave out.
Held-out clips are never masked or warped; generation never is.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from vita_framework.errors import ConfigError

_COUNTS = ("freq_masks", "freq_width", "time_masks", "time_width")
_KEYS = (*_COUNTS, "warp")


@dataclass(frozen=True)
class FeatureMasks:
    """``freq_masks`` bands of up to ``freq_width`` mel bins and ``time_masks`` stretches of up to
    ``time_width`` frames per clip, each width drawn from 0 up to its bound; first, with ``warp``, the bin axis
    scaled by a factor drawn from ``warp`` (bin ``b`` takes the value at ``b x factor``, linearly interpolated)."""

    freq_masks: int = 0
    freq_width: int = 0
    time_masks: int = 0
    time_width: int = 0
    warp: tuple[float, float] | None = None

    def apply(self, features: Any, lengths: Any, fill: Any, keys: list[str | None]) -> Any:
        """A masked copy of ``features`` ``[clips, frames, bins]``; clip ``i`` drawn from ``keys[i]`` (the
        same key, the same masks), left alone when its key is None. ``fill`` is the ``[bins]`` value of a
        masked cell."""
        out = features.clone()
        bins = out.shape[-1]
        fill = fill.to(out.dtype)
        for i, key in enumerate(keys):
            if key is None:
                continue
            if self.warp is not None:
                out[i] = _warped(out[i], random.Random(f"specwarp/{key}").uniform(*self.warp))
            rng = random.Random(f"specmask/{key}")
            for _ in range(self.freq_masks):
                width = rng.randint(0, min(self.freq_width, bins))
                start = rng.randint(0, bins - width)
                out[i, :, start: start + width] = fill[start: start + width]
            frames = int(lengths[i])
            for _ in range(self.time_masks):
                width = rng.randint(0, min(self.time_width, frames))
                start = rng.randint(0, frames - width)
                out[i, start: start + width, :] = fill
        return out


def _warped(features: Any, factor: float) -> Any:
    """``features`` ``[frames, bins]`` with bin ``b`` read at ``b x factor`` (clamped to the last bin)."""
    import torch

    bins = features.shape[-1]
    source = torch.clamp(torch.arange(bins, dtype=torch.float32) * factor, 0, bins - 1)
    low = source.floor().long()
    high = torch.clamp(low + 1, max=bins - 1)
    weight = (source - low).to(features.dtype)
    return features[:, low] * (1 - weight) + features[:, high] * weight


def feature_masks(cfg: Any) -> FeatureMasks | None:
    """The ``speech.specaugment`` block (``freq_masks``, ``freq_width``, ``time_masks``, ``time_width``: counts
    >= 0; ``warp``: ``[low, high]`` or null) as :class:`FeatureMasks`; None when absent or when it changes
    nothing. Raises ``ConfigError`` naming the key on a bad value."""
    if not cfg:
        return None
    unknown = sorted(set(cfg) - set(_KEYS))
    if unknown:
        raise ConfigError(f"speech.specaugment: unknown key(s) {', '.join(unknown)}; use {', '.join(_KEYS)}")
    values: dict[str, Any] = {}
    warp = cfg.get("warp")
    if warp is not None:
        try:
            low, high = (float(v) for v in warp)
        except (TypeError, ValueError):
            low = high = -1.0
        if not 0 < low <= high:
            raise ConfigError(f"speech.specaugment.warp must be [low, high] with 0 < low <= high (e.g. [0.88, 1.12]) "
                              f"or null; got {warp!r}")
        values["warp"] = (low, high)
    for name in _COUNTS:
        value = cfg.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"speech.specaugment.{name} must be a whole number >= 0; got {value!r}")
        values[name] = value
    masks = FeatureMasks(**values)
    masked = (masks.freq_masks and masks.freq_width) or (masks.time_masks and masks.time_width)
    return masks if masked or masks.warp is not None else None
