"""Splice fusion: every placeholder position receives one feature row, in order (VITA-1.5's fusion)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vita_framework.hookspecs import hookimpl


@dataclass
class SpliceOptions:
    pass


class SpliceFusion:
    """Embed the text (placeholders clamped to id 0), then ``masked_scatter`` the features in.

    The number of placeholder positions per modality must equal the number of feature rows; otherwise a
    ``FusionError`` reports the counts per row and per item, instead of a silent misalignment.
    """

    def reduce(self, modality: str, features: list[Any], groups: list[int]) -> list[Any]:
        return features

    def reduced_tokens(self, tokens: list[int], groups: list[int]) -> list[int]:
        """Rows each item keeps after ``reduce`` (sizes the prompt before anything is encoded)."""
        return list(tokens)

    def fuse(self, input_ids, attention_mask, embed, features, placeholder_ids):
        import torch

        from vita_framework.errors import FusionError
        from vita_framework.interfaces import FusedInputs

        is_placeholder = torch.zeros_like(input_ids, dtype=torch.bool)
        for pid in placeholder_ids.values():
            is_placeholder |= input_ids == pid
        embeds = embed(input_ids.masked_fill(is_placeholder, 0))
        for modality, pid in placeholder_ids.items():
            items = features.get(modality) or []
            positions = input_ids == pid
            n_positions = int(positions.sum())
            n_rows = sum(int(f.shape[0]) for f in items)
            if n_positions != n_rows:
                per_row = positions.sum(dim=1).tolist()
                per_item = [int(f.shape[0]) for f in items]
                raise FusionError(
                    f"{modality}: the prompt has {n_positions} placeholder positions (per row {per_row}) but the "
                    f"encoders produced {n_rows} feature rows (per item {per_item}); each <{modality}> marker "
                    "must match one input"
                )
            if n_rows == 0:
                continue
            flat = torch.cat(items).to(device=embeds.device, dtype=embeds.dtype)
            if flat.shape[-1] != embeds.shape[-1]:
                raise FusionError(
                    f"{modality} features have width {flat.shape[-1]} but the LLM embeds width {embeds.shape[-1]}"
                )
            embeds = embeds.masked_scatter(positions.unsqueeze(-1), flat)
        return FusedInputs(inputs_embeds=embeds, attention_mask=attention_mask)


def build_splice(options: SpliceOptions, context: Any) -> SpliceFusion:
    return SpliceFusion()


@hookimpl
def vita_register_fusion_strategies(register):
    register("splice", build_splice, schema=SpliceOptions,
             description="one placeholder per feature token, masked_scatter with a count check")
