"""FastV-style visual-token pruning inside the LLM's prefill.

FastV (Chen et al., ECCV 2024) notes that after the first couple of LLM layers most image tokens receive very
little attention, and drops the least-attended ones for the remaining layers: in layer ``K-1`` the attention the
last prompt token pays to each image token ranks them; layers ``K ..`` (and their KV cache) keep ``keep`` of
them. Unlike the reductions before the LLM, the first ``K`` layers read every token and the kept ones keep
their original positions, so the ranking can depend on the question.

The prompt holds every visual token (``reduced_tokens`` is the identity); ``fuse`` marks them and hands the LLM
a :class:`vita_framework.contracts.PrefillPruning`; the LLM must offer ``prefill_pruning_layer`` (the built-in
transformers backbones do, with ``llm.attn_implementation`` ``sdpa`` or ``eager``), which is checked when this
component is built, before anything is encoded. ``tokens_in`` counts the visual tokens the layers after ``K``
keep (``pruned_tokens``); the prompt's positions (``tokens_in.total``) are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vita_framework.fusion import SpliceFusion
from vita_framework.hookspecs import hookimpl
from vita_framework.token_reduction import check_keep, kept_count


@dataclass
class FastVOptions:
    keep: float = 0.5  # fraction of the visual tokens the LLM layers after `layer` keep, in (0, 1]
    layer: int | None = None  # FastV's K: layers 0..K-1 see every token (null: 2, or 1 for a 2-layer LLM)
    streams: list[str] = field(default_factory=lambda: ["image"])  # placeholder streams pruned

    def __post_init__(self) -> None:
        check_keep(self.keep)
        if self.layer is not None and self.layer < 1:
            raise ValueError(f"fusion.layer must be >= 1 (layers 0..K-1 see every token); got {self.layer}")


class FastVFusion(SpliceFusion):
    """Splice every visual token, and ask the LLM to prune them after layer ``layer``."""

    def __init__(self, keep: float, layer: int, streams: list[str]) -> None:
        self.keep, self.layer, self.streams = float(keep), int(layer), list(streams)

    def pruned_tokens(self, stream: str, tokens: list[int], groups: list[int]) -> list[int]:
        if stream not in self.streams:
            return list(tokens)
        return [kept_count(n, self.keep) for n in tokens]

    def fuse(
        self,
        input_ids: Any,
        attention_mask: Any,
        embed: Any,
        features: dict[str, list[Any]],
        placeholder_ids: dict[str, int],
    ) -> Any:
        import torch

        from vita_framework.contracts import PrefillPruning
        from vita_framework.token_reduction import segment_rows

        fused = super().fuse(input_ids, attention_mask, embed, features, placeholder_ids)
        if self.keep >= 1.0:
            return fused
        positions = torch.zeros_like(input_ids, dtype=torch.bool)
        keep = [0] * int(input_ids.shape[0])
        for stream in self.streams:
            if stream not in placeholder_ids:
                continue
            mine = input_ids == placeholder_ids[stream]
            positions |= mine
            sizes = [int(f.shape[0]) for f in features.get(stream) or []]
            for row, segments in enumerate(segment_rows(mine, sizes)):
                keep[row] += sum(kept_count(n, self.keep) for n in segments)
        if bool(positions.any()):
            fused.pruning = PrefillPruning(positions=positions, keep=keep, layer=self.layer)
        return fused


def build_fastv(options: FastVOptions, context: Any) -> FastVFusion:
    from vita_framework.errors import ConfigError

    llm = context.components.get("llm")
    check = getattr(llm, "prefill_pruning_layer", None)
    if check is None:
        raise ConfigError(
            f"fusion=fastv prunes visual tokens inside the LLM's prefill, which llm "
            f"{type(llm).__name__} does not offer (no prefill_pruning_layer); use llm=qwen2 or "
            "llm=hf_causal_lm, or reduce before the LLM with fusion=visionzip or fusion=avgpool"
        )
    return FastVFusion(options.keep, check(options.layer), options.streams)


@hookimpl
def vita_register_fusion_strategies(register):
    register(
        "fastv",
        build_fastv,
        schema=FastVOptions,
        description="FastV-style pruning inside the LLM prefill: after layer K keep `keep` of the visual "
        "tokens, ranked by the last token's attention in layer K-1",
    )
