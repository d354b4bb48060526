"""FastV-style visual-token pruning inside a transformers decoder's prefill, through module hooks.

Why hooks: transformers' ``generate`` and its decoder loop stay unchanged (logits processors, streamers,
cancellation, scores all work as usual); for the one ``generate`` call that carries a
:class:`~vita_framework.contracts.PrefillPruning`, hooks on the decoder layers

* score: in layer ``K-1`` during prefill, the attention the last prompt position pays to every position (heads
  averaged). With ``eager`` the layer's own weights are read; with ``sdpa`` (which returns none) that layer runs
  through :func:`_scoring_sdpa`: the same sdpa call, plus the last query's softmax row computed from the same
  query and key states (``O(T)`` memory, and the layer's output is untouched);
* prune: after layer ``K-1`` each row keeps its real positions minus its lowest-scored prunable ones, re-left-padded
  to the longest row; layers ``K..`` get matching RoPE embeddings (original positions), masks and a KV cache of the
  pruned length;
* decode: layers ``K..`` get masks over their shorter cache at every step (layers before ``K`` keep their own).

Other attention implementations (flash, flex) are refused by :func:`check_pruning` before anything is encoded.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch

from .errors import ConfigError

#: attention implementations whose layer-K scores can be read
SUPPORTED = ("eager", "sdpa")
#: FastV's K (the paper prunes after the second layer)
DEFAULT_LAYER = 2
_SCORING = "vita_fastv_scoring_sdpa"
_SCORERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # attention module -> its pruner


def decoder_layers(model: Any) -> Any:
    """The decoder layers of a transformers causal LM (``model.model.layers`` for Llama-like models), or None."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None or not all(hasattr(layer, "self_attn") for layer in layers):
        return None
    return layers


def check_pruning(model: Any, layer: int | None) -> int:
    """The pruning layer K for ``model`` (``layer``, or :data:`DEFAULT_LAYER` capped for shallow models); a
    :class:`ConfigError` naming the option and the fix when this model cannot prune there."""
    attn = getattr(model.config, "_attn_implementation", None) or "eager"
    if attn not in SUPPORTED:
        raise ConfigError(
            f"fusion=fastv ranks visual tokens by the attention of LLM layer K, which "
            f"llm.attn_implementation={attn} cannot return; set llm.attn_implementation=sdpa (layer K's "
            "last-token attention is then computed beside the sdpa call) or eager"
        )
    layers = decoder_layers(model)
    if layers is None:
        raise ConfigError(
            f"fusion=fastv cannot find the decoder layers of {type(model).__name__} (it needs "
            "model.model.layers with self_attn); use fusion=visionzip or fusion=avgpool"
        )
    if any(t != "full_attention" for t in getattr(model.config, "layer_types", None) or []):
        raise ConfigError(
            f"fusion=fastv does not support the sliding-window layers of {type(model).__name__}; "
            "use fusion=visionzip or fusion=avgpool"
        )
    n = len(layers)
    chosen = min(DEFAULT_LAYER, n - 1) if layer is None else int(layer)
    if n < 2 or not 1 <= chosen <= n - 1:
        raise ConfigError(
            f"fusion.layer={layer} must be between 1 and {n - 1} for this LLM ({n} layers: layers "
            "0..K-1 see every token, layers K.. only the kept ones)"
        )
    return chosen


def _scoring_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> Any:
    """sdpa, plus the softmax row of the last query, handed to the pruner that owns ``module``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    pruner = _SCORERS.get(module)
    if pruner is not None:
        pruner.score(query, key, attention_mask, kwargs.get("scaling"))
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register_scoring() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    if _SCORING not in AttentionInterface._global_mapping:
        AttentionInterface.register(_SCORING, _scoring_sdpa)
    if _SCORING not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionMaskInterface.register(_SCORING, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def _mask(allowed: torch.Tensor, attn: str, dtype: torch.dtype) -> torch.Tensor:
    """bool ``[B, q, kv]`` (True: attend) -> this implementation's 4D mask; a query that may see nothing (a pad
    slot) sees everything instead, as transformers does, so no softmax row is empty."""
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
    allowed = allowed.unsqueeze(1)
    if attn == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


class PrefillPruner:
    """The hooks of one ``generate`` call; use as a context manager around it."""

    def __init__(self, model: Any, pruning: Any, attention_mask: torch.Tensor) -> None:
        self.model = model
        self.layer = check_pruning(model, pruning.layer)
        self.attn = model.config._attn_implementation
        self.layers = decoder_layers(model)
        self.positions = pruning.positions.to(attention_mask.device).bool()
        self.keep = [int(k) for k in pruning.keep]
        self.real = attention_mask.bool()
        self.scores: torch.Tensor | None = None
        self.kept: torch.Tensor | None = None  # [B, T'] original position of each slot after pruning
        self.pruned_mask: torch.Tensor | None = None  # [B, T' + generated] real slots of the pruned layers
        self.step_mask: torch.Tensor | None = None
        self.prefilled = False  # layer K-1 has run its prefill (scored and pruned)
        self.decoding = False  # every layer has run its prefill
        self.handles: list[Any] = []
        self._attn_config: Any = None

    # -- lifecycle ------------------------------------------------------------------------------------------
    def __enter__(self) -> PrefillPruner:
        scorer = self.layers[self.layer - 1]
        self.handles.append(scorer.register_forward_pre_hook(self._before_scoring, with_kwargs=True))
        self.handles.append(scorer.self_attn.register_forward_hook(self._read_eager_weights))
        self.handles.append(scorer.register_forward_hook(self._prune))
        for layer in self.layers[self.layer :]:
            self.handles.append(layer.register_forward_pre_hook(self._pruned_inputs, with_kwargs=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()
        self._restore_scorer()

    def _restore_scorer(self) -> None:
        attention = self.layers[self.layer - 1].self_attn
        if self._attn_config is not None:
            attention.config = self._attn_config
            self._attn_config = None
        _SCORERS.pop(attention, None)

    # -- scoring (layer K-1, prefill) ----------------------------------------------------------------------
    def _before_scoring(self, module: Any, args: tuple, kwargs: dict) -> None:
        if self.prefilled or self.attn != "sdpa":
            return
        _register_scoring()
        attention = module.self_attn
        self._attn_config = attention.config
        scoring = copy.copy(attention.config)
        scoring._attn_implementation_internal = _SCORING
        attention.config = scoring
        _SCORERS[attention] = self

    def score(self, query: torch.Tensor, key: torch.Tensor, attention_mask: Any, scaling: float | None) -> None:
        """The last query's attention over every key, heads averaged -> ``self.scores`` ``[B, T]``."""
        last = query[:, :, -1:, :].float()
        keys = key.float().repeat_interleave(last.shape[1] // key.shape[1], dim=1)
        logits = (last @ keys.transpose(-1, -2)) * (scaling if scaling is not None else last.shape[-1] ** -0.5)
        if attention_mask is not None:
            row = attention_mask[:, :, -1:, : keys.shape[2]]
            logits = logits.masked_fill(~row, float("-inf")) if row.dtype == torch.bool else logits + row.float()
        self.scores = logits.softmax(dim=-1).mean(dim=1)[:, 0]

    def _read_eager_weights(self, module: Any, args: tuple, output: Any) -> None:
        if self.prefilled or self.attn != "eager":
            return
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise ConfigError(
                "fusion=fastv: the eager attention of the scoring layer returned no weights; "
                "set llm.attn_implementation=sdpa"
            )
        self.scores = weights[:, :, -1, :].float().mean(dim=1)

    # -- pruning (after layer K-1, prefill) ---------------------------------------------------------------
    def _prune(self, module: Any, args: tuple, output: Any) -> Any:
        if self.prefilled:
            return None
        self.prefilled = True
        self._restore_scorer()
        hidden = output[0] if isinstance(output, tuple) else output
        if self.scores is None or self.scores.shape[-1] != hidden.shape[1]:
            raise RuntimeError("fusion=fastv: no attention scores were captured in the scoring layer's prefill")
        rows = []
        for r in range(hidden.shape[0]):
            keep = self.real[r] & ~self.positions[r]
            candidates = (self.positions[r] & self.real[r]).nonzero().squeeze(1)
            best = candidates[self.scores[r, candidates].topk(min(self.keep[r], candidates.numel())).indices]
            keep[best] = True
            rows.append(keep.nonzero().squeeze(1))
        width = max(int(r.numel()) for r in rows)
        kept = torch.zeros(len(rows), width, dtype=torch.long, device=hidden.device)
        real = torch.zeros(len(rows), width, dtype=torch.bool, device=hidden.device)
        for r, idx in enumerate(rows):
            kept[r, width - idx.numel() :] = idx
            real[r, width - idx.numel() :] = True
        self.kept, self.pruned_mask = kept, real
        pruned = hidden.gather(1, kept.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        return (pruned, *output[1:]) if isinstance(output, tuple) else pruned

    # -- layers K.. ----------------------------------------------------------------------------------------
    def _pruned_inputs(self, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Masks over the pruned cache (built once per forward pass, at layer K) and, in prefill, the kept slots'
        RoPE embeddings; layers K.. never see the full-length kwargs."""
        hidden = args[0] if args else kwargs["hidden_states"]
        if self.kept is None:
            raise RuntimeError("fusion=fastv: a pruned layer ran before the scoring layer pruned the prefill")
        if module is self.layers[self.layer]:
            queries = int(hidden.shape[1])
            if not self.decoding:  # prefill: causal over the kept slots
                causal = torch.ones(queries, queries, dtype=torch.bool, device=hidden.device).tril()
            else:  # a decode step: the new (real) slots follow the cache
                ones = torch.ones(hidden.shape[0], queries, dtype=torch.bool, device=hidden.device)
                self.pruned_mask = torch.cat([self.pruned_mask, ones], dim=1)
                total = self.pruned_mask.shape[1]
                causal = torch.ones(queries, total, dtype=torch.bool, device=hidden.device).tril(total - queries)
            self.step_mask = _mask(self.pruned_mask.unsqueeze(1) & causal, self.attn, hidden.dtype)
        kwargs = {**kwargs, "attention_mask": self.step_mask}
        if not self.decoding:
            kwargs.update(self._gathered_positions(kwargs))
            if module is self.layers[-1]:
                self.decoding = True
        return args, kwargs

    def _gathered_positions(self, kwargs: dict) -> dict:
        """RoPE embeddings and position ids of the kept slots (their original positions)."""
        out = {}
        kept = self.kept
        embeddings = kwargs.get("position_embeddings")
        if embeddings is not None:
            out["position_embeddings"] = tuple(self._gather(t, kept) for t in embeddings)
        ids = kwargs.get("position_ids")
        if isinstance(ids, torch.Tensor) and ids.shape[-1] == self.positions.shape[1]:
            out["position_ids"] = ids.expand(kept.shape[0], -1).gather(1, kept)
        return out

    @staticmethod
    def _gather(table: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        table = table.expand(kept.shape[0], *table.shape[1:])
        return table.gather(1, kept.unsqueeze(-1).expand(-1, -1, table.shape[-1]))
