"""The depth encoder module (imports torch, so it is loaded only by the factory).

It satisfies :class:`vita_framework.contracts.Encoder` by having its members; it inherits nothing from the
framework.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DepthBatch:
    """Normalised maps, ``[N, 1, image_size, image_size]`` float32 in [-1, 1] (what ``encode`` takes)."""

    pixels: torch.Tensor


class DepthPatchEncoder(nn.Module):
    """``[H, W]`` depth maps -> ``[(image_size / patch_size)^2, llm width]`` tokens per map.

    A patch-embedding convolution (kernel = stride = ``patch_size``), a 3x3 convolution mixing neighbouring
    patches, then a Linear + LayerNorm to the LLM width; tokens come out row-major over the patch grid.
    """

    def __init__(self, hidden_size: int, *, image_size: int = 64, patch_size: int = 16, width: int = 32,
                 max_depth: float | None = None) -> None:
        super().__init__()
        self._hidden_size = hidden_size
        self.image_size, self.patch_size, self.max_depth = image_size, patch_size, max_depth
        self.grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(1, width, kernel_size=patch_size, stride=patch_size)
        self.mix = nn.Conv2d(width, width, kernel_size=3, padding=1)
        self.proj = nn.Linear(width, hidden_size)
        self.norm = nn.LayerNorm(hidden_size)

    # -- the Encoder contract ------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        """Width of every token: the LLM's (this encoder has no projector after it)."""
        return self._hidden_size

    def preprocess(self, items: list[Any]) -> DepthBatch:
        """Float ``[H, W]`` arrays -> normalised, resized maps (no model runs here)."""
        maps = []
        for item in items:
            depth = torch.as_tensor(item, dtype=torch.float32)
            if self.max_depth is not None:
                depth = (depth / self.max_depth).clamp(0.0, 1.0)
            else:  # per-map min-max: relative depth, as most monocular estimators give
                low, high = depth.min(), depth.max()
                depth = (depth - low) / (high - low) if high > low else torch.zeros_like(depth)
            shrink = max(depth.shape) > self.image_size  # antialias only when downsampling
            resized = F.interpolate(depth[None, None], size=(self.image_size, self.image_size), mode="bilinear",
                                    align_corners=False, antialias=shrink)
            maps.append(resized[0] * 2.0 - 1.0)
        pixels = torch.stack(maps) if maps else torch.zeros(0, 1, self.image_size, self.image_size)
        return DepthBatch(pixels)

    def planned_tokens(self, batch: DepthBatch) -> list[int]:
        """Every map gives one token per patch, whatever its size (it was resized)."""
        return [self.grid * self.grid] * int(batch.pixels.shape[0])

    def encode(self, batch: DepthBatch) -> list[torch.Tensor]:
        """One ``[grid * grid, hidden_size]`` tensor per map, in batch order."""
        if batch.pixels.shape[0] == 0:
            return []
        weight = self.proj.weight
        with torch.inference_mode():
            x = batch.pixels.to(device=weight.device, dtype=weight.dtype)
            x = F.gelu(self.patch_embed(x))
            x = x + F.gelu(self.mix(x))
            tokens = self.norm(self.proj(x.flatten(2).transpose(1, 2)))  # [N, grid*grid, hidden]
        return list(tokens.unbind(0))

    def checkpoint_state(self) -> dict[str, Any]:
        """Tensors named as the factory loads them, relative to ``depth.weights_prefix``."""
        return dict(self.state_dict())
