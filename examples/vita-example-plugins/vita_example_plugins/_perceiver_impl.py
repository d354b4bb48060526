"""The perceiver-resampler module (imports torch, so it is loaded only by the factory)."""

from __future__ import annotations

import torch
from torch import nn


class PerceiverResampler(nn.Module):
    """``[N, tokens, width_in] -> [N, num_latents, width_out]``: learned queries attend over each tile.

    One pre-norm cross-attention block plus an MLP, both residual on the latents. The tile's tokens are
    first mapped to the LLM width by a Linear, so attention, norms and MLP all run at one width.
    """

    def __init__(self, width_in: int, width_out: int, *, num_latents: int = 64, num_heads: int = 8,
                 mlp_ratio: int = 4) -> None:
        super().__init__()
        self.num_latents = num_latents
        self.proj_in = nn.Linear(width_in, width_out)
        self.latents = nn.Parameter(torch.randn(num_latents, width_out) * 0.02)
        self.norm_latents = nn.LayerNorm(width_out)
        self.norm_tokens = nn.LayerNorm(width_out)
        self.attn = nn.MultiheadAttention(width_out, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(width_out)
        self.mlp = nn.Sequential(nn.Linear(width_out, mlp_ratio * width_out), nn.GELU(),
                                 nn.Linear(mlp_ratio * width_out, width_out))

    def tokens_out(self, tokens: int) -> int:
        """Tokens per tile after this projector, whatever came in (for sizing a prompt before encoding)."""
        return self.num_latents

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Tensors to save, named as the factory loads them (relative to ``weights_prefix``)."""
        return dict(self.state_dict())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Accept ``[N, tokens, C]`` (the pipeline's stacked tiles) or one tile ``[tokens, C]``."""
        single = features.dim() == 2
        if single:
            features = features.unsqueeze(0)
        tokens = self.norm_tokens(self.proj_in(features))
        queries = self.norm_latents(self.latents).unsqueeze(0).expand(features.shape[0], -1, -1)
        attended, _ = self.attn(queries, tokens, tokens, need_weights=False)
        latents = queries + attended
        latents = latents + self.mlp(self.norm_mlp(latents))
        return latents[0] if single else latents
