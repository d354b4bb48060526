"""The MLP projector module (imports torch: loaded by the factory only)."""

from __future__ import annotations

from typing import Any

from torch import nn


class MLPProjector(nn.Sequential):
    """``nn.Sequential`` (so tensors keep the reference's names 0, 2, ...) with the projector contract."""

    def tokens_out(self, tokens: int) -> int:
        return tokens

    def checkpoint_state(self) -> dict[str, Any]:
        return dict(self.state_dict())
