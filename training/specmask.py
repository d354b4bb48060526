"""Masked bands and stretches of a training clip's filterbank features (``speech.specaugment``).

Why: the audio encoder hears 56 voices during training and must understand a voice it never heard. Hiding a
random band of mel bins makes it tell words from several parts of the spectrum rather than from where one
voice's formants happen to lie, and hiding a random stretch of frames makes it use the whole utterance. The
masked values are the encoder's CMVN mean, so after its input normalisation they are zero. Held-out clips are
never masked; generation never masks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from vita_framework.errors import ConfigError

_KEYS = ("freq_masks", "freq_width", "time_masks", "time_width")


@dataclass(frozen=True)
class FeatureMasks:
    """``freq_masks`` bands of up to ``freq_width`` mel bins and ``time_masks`` stretches of up to
    ``time_width`` frames per clip, each width drawn from 0 up to its bound."""

    freq_masks: int = 0
    freq_width: int = 0
    time_masks: int = 0
    time_width: int = 0

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


def feature_masks(cfg: Any) -> FeatureMasks | None:
    """The ``speech.specaugment`` block (``freq_masks``, ``freq_width``, ``time_masks``, ``time_width``: counts
    >= 0) as :class:`FeatureMasks`; None when absent or when it masks nothing. Raises ``ConfigError`` naming the
    key on a bad value."""
    if not cfg:
        return None
    unknown = sorted(set(cfg) - set(_KEYS))
    if unknown:
        raise ConfigError(f"speech.specaugment: unknown key(s) {', '.join(unknown)}; use {', '.join(_KEYS)}")
    values = {}
    for name in _KEYS:
        value = cfg.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"speech.specaugment.{name} must be a whole number >= 0; got {value!r}")
        values[name] = value
    masks = FeatureMasks(**values)
    masked = (masks.freq_masks and masks.freq_width) or (masks.time_masks and masks.time_width)
    return masks if masked else None
