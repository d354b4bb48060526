"""Splice fusion, the base other fusion strategies build on (VITA-1.5's own fusion).

Every placeholder position receives one feature row, in order. Text ids are embedded with placeholders
clamped to id 0, then each stream's features are ``masked_scatter``-ed in. The number of placeholder positions
per stream must equal the number of feature rows; otherwise a ``FusionError`` reports the counts per row and per
item instead of a silent misalignment. Subclasses override ``reduce`` / ``reduced_tokens`` (slow-fast video
pooling, token pooling) and keep ``fuse``.
"""

from __future__ import annotations

from typing import Any

from .contracts import FusedInputs
from .errors import FusionError


class SpliceFusion:
    """Satisfies :class:`vita_framework.contracts.FusionStrategy`; reduces nothing."""

    def reduced_tokens(self, stream: str, tokens: list[int], groups: list[int]) -> list[int]:
        return list(tokens)

    def reduce(self, stream: str, features: list[Any], groups: list[int]) -> list[Any]:
        return features

    def checkpoint_state(self) -> dict[str, Any]:
        return {}

    def fuse(self, input_ids: Any, attention_mask: Any, embed: Any, features: dict[str, list[Any]],
             placeholder_ids: dict[str, int]) -> FusedInputs:
        import torch

        is_placeholder = torch.zeros_like(input_ids, dtype=torch.bool)
        for pid in placeholder_ids.values():
            is_placeholder |= input_ids == pid
        embeds = embed(input_ids.masked_fill(is_placeholder, 0))
        for stream, pid in placeholder_ids.items():
            items = features.get(stream) or []
            positions = input_ids == pid
            n_positions = int(positions.sum())
            n_rows = sum(int(f.shape[0]) for f in items)
            if n_positions != n_rows:
                per_row = positions.sum(dim=1).tolist()
                per_item = [int(f.shape[0]) for f in items]
                raise FusionError(
                    f"{stream}: the prompt has {n_positions} placeholder positions (per row {per_row}) but the "
                    f"encoders produced {n_rows} feature rows (per item {per_item}); each <{stream}> marker "
                    "must match one input"
                )
            if n_rows == 0:
                continue
            flat = torch.cat(items).to(device=embeds.device, dtype=embeds.dtype)
            if flat.shape[-1] != embeds.shape[-1]:
                raise FusionError(
                    f"{stream} features have width {flat.shape[-1]} but the LLM embeds width {embeds.shape[-1]}"
                )
            embeds = embeds.masked_scatter(positions.unsqueeze(-1), flat)
        return FusedInputs(inputs_embeds=embeds, attention_mask=attention_mask)
