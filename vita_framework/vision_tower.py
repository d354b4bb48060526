"""A base for vision encoders that wrap one torch model (imports torch: use from model code only).

The members every tower shares are written once here (prismatic-style): ``encode`` runs the differentiable
``features`` under inference mode (training calls ``features`` itself, so it learns through exactly the feature
path generation uses), every tile plans ``tokens_per_tile`` rows, frames are preprocessed as images, and the
checkpoint state is the wrapped model's own. A subclass sets ``model``, ``tokens_per_tile`` and ``hidden_size``
and implements ``preprocess`` and ``features``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .contracts import VisionBatch
from .errors import InputError


class VisionTower(nn.Module):
    """Satisfies :class:`vita_framework.contracts.VisionEncoder` once ``preprocess`` and ``features`` exist."""

    model: nn.Module
    tokens_per_tile: int
    hidden_size: int

    def preprocess(self, images: list[Any]) -> VisionBatch:
        raise NotImplementedError

    def preprocess_frames(self, frames: list[Any]) -> VisionBatch:
        """Video frames as images: one tile each (a tiling tower overrides this)."""
        if not frames:
            raise InputError("a video gave no frames to encode")
        return self.preprocess(frames)

    def planned_tokens(self, batch: VisionBatch) -> list[int]:
        return [self.tokens_per_tile] * int(batch.pixel_values.shape[0])

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The wrapped model's tensors in its own names (a tower with a reference layout overrides this)."""
        return dict(self.model.state_dict())

    @torch.inference_mode()
    def encode(self, batch: VisionBatch) -> list[torch.Tensor]:
        return list(self.features(batch.pixel_values).unbind(0))

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` -> ``[N, tokens_per_tile, hidden_size]``, differentiable."""
        raise NotImplementedError

    def model_input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels on the model's device and in its dtype."""
        param = next(self.model.parameters())
        return pixel_values.to(device=param.device, dtype=param.dtype)
