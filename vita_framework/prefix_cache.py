"""Prefill row by row, reusing the key/value states of prompt prefixes that requests share.

Why: a left-padded batch prefills every row to the longest row's width, and every request recomputes the chat
template's system prompt. On a CPU-bound server both are most of the work of a batch (a text row padded to an
image row's width; ~100 system-prompt tokens per request). Here each row is prefilled alone, at its own length,
starting from the cached states of its longest known shared prefix; the rows' states are then left-padded into
one batch cache and ``generate`` runs only the last prompt position and the decode steps as one batch.

Which prefixes are shared is learnt, not configured: a row's *text head* (its ids before the first placeholder,
whose features differ per request) is compared with the other rows of the batch and with recent rows; a common
head of at least :data:`MIN_PREFIX` tokens (the system prompt and the user turn's header, or an earlier turn of
the same conversation) is computed once and kept in a byte-bounded LRU. No chat template knowledge is needed.

The states of a prefix do not depend on what follows it (causal attention), so answers equal those of a
plain prefill up to float rounding of differently shaped matrix products (greedy ids identical in the tests).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import Any

#: shorter shared heads are not worth a cache entry
MIN_PREFIX = 8
#: text heads of this many recent rows are remembered to discover shared prefixes across batches
RECENT_ROWS = 32


def _common_length(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def text_head(ids: list[int]) -> tuple[int, ...]:
    """The ids before the first placeholder (negative id): the part of a prompt that may be shared."""
    for i, token in enumerate(ids):
        if token < 0:
            return tuple(ids[:i])
    return tuple(ids)


class PrefixStore:
    """A byte-bounded LRU of prefix states (per layer ``(keys, values)``, batch 1), keyed by the prefix ids."""

    def __init__(self, max_mb: float) -> None:
        self.max_bytes = int(float(max_mb) * 2**20)
        self._entries: collections.OrderedDict[tuple[int, ...], list[tuple[Any, Any]]] = collections.OrderedDict()
        self._recent: collections.deque[tuple[int, ...]] = collections.deque(maxlen=RECENT_ROWS)
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        """Lookups, hits, entries and bytes held (the server's /metrics reads them)."""
        return {"queries": self.hits + self.misses, "hits": self.hits, "entries": len(self._entries),
                "bytes": self._bytes}

    def plan(self, heads: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """The prefix each row starts from: the longer of the longest stored key it begins with and the longest
        head it shares with another row of the batch or a recent row (at least :data:`MIN_PREFIX` ids; an
        earlier turn of the same conversation beats the system prompt alone), else ()."""
        with self._lock:
            chosen = []
            for i, head in enumerate(heads):
                best: tuple[int, ...] = ()
                for key in self._entries:
                    if len(best) < len(key) <= len(head) and head[:len(key)] == key:
                        best = key
                others = [h for j, h in enumerate(heads) if j != i] + list(self._recent)
                shared = max((_common_length(head, o) for o in others), default=0)
                if shared >= MIN_PREFIX and shared > len(best):
                    best = head[:shared]
                chosen.append(best)
            self._recent.extend(heads)
            return chosen

    def plan_rows(self, rows: list[list[int]]) -> PrefixPlan:
        """:meth:`plan` for prompt ids (their text heads), as the LLM receives it."""
        return PrefixPlan(self, self.plan([text_head(ids) for ids in rows]))

    def get(self, key: tuple[int, ...]) -> list[tuple[Any, Any]] | None:
        with self._lock:
            states = self._entries.get(key)
            if states is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return states

    def put(self, key: tuple[int, ...], states: list[tuple[Any, Any]]) -> None:
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in states)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = states
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self._bytes -= sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in old)


@dataclass
class PrefixPlan:
    """Attached to :class:`~vita_framework.contracts.FusedInputs` by the pipeline: each row's shared prefix."""

    store: PrefixStore
    prefixes: list[tuple[int, ...]] = field(default_factory=list)


def _room_layer(keys: Any, values: Any, room: int) -> Any:
    """A cache layer holding ``keys``/``values`` with ``room`` spare positions: each decode step writes its new
    states in place, where the default layer concatenates (copying the whole batch's cache at every step)."""
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):
        def __init__(self) -> None:
            super().__init__()
            shape = (*keys.shape[:-2], keys.shape[-2] + room, keys.shape[-1])
            self._k, self._v = keys.new_empty(shape), values.new_empty(shape)
            self._fill(keys, values, 0)
            self.device, self.is_initialized = keys.device, True

        def _fill(self, k: Any, v: Any, at: int) -> None:
            end = at + k.shape[-2]
            if end > self._k.shape[-2]:  # more steps than planned: grow (rare)
                grown = (*self._k.shape[:-2], 2 * end, self._k.shape[-1])
                for name in ("_k", "_v"):
                    old, new = getattr(self, name), getattr(self, name).new_empty(grown)
                    new[..., :at, :] = old[..., :at, :]
                    setattr(self, name, new)
            self._k[..., at:end, :] = k
            self._v[..., at:end, :] = v
            self.keys, self.values = self._k[..., :end, :], self._v[..., :end, :]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            self._fill(key_states, value_states, self.keys.shape[-2])
            return self.keys, self.values

    return RoomyLayer()


def _states(cache: Any) -> list[tuple[Any, Any]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _forward(model: Any, embeds: Any, cache: Any) -> Any:
    """Run ``embeds`` after ``cache`` (None: from position 0); only the last position's logits are computed."""
    from transformers import DynamicCache

    cache = cache if cache is not None else DynamicCache(config=model.config)
    model(inputs_embeds=embeds, cache=cache, use_cache=True, logits_to_keep=1)
    return cache


def batch_cache(model: Any, fused: Any, plan: PrefixPlan, room: int = 0) -> Any | None:
    """The batch's cache of every prompt position but the last, built row by row, with ``room`` positions to
    decode into (None when the mask is not left padding, a row has a single position, or the model's cache is
    not plain per-layer key/value states: the caller then prefills as usual)."""
    import torch
    from transformers import DynamicCache

    probe = DynamicCache(config=model.config)
    if any(type(layer).__name__ != "DynamicLayer" for layer in getattr(probe, "layers", [None])):
        return None  # sliding-window or linear-attention layers keep states another way: plain prefill
    embeds, mask = fused.inputs_embeds, fused.attention_mask
    width = embeds.shape[1]
    lengths = [int(n) for n in mask.sum(dim=1).tolist()]
    for row, n in enumerate(lengths):
        if n < 2 or not bool(mask[row, width - n:].all()):
            return None
    rows = []
    for row, n in enumerate(lengths):
        tokens = embeds[row:row + 1, width - n:width - 1]
        prefix = (plan.prefixes[row] if row < len(plan.prefixes) else ())[:n - 1]  # the last position is generate's
        cache = None
        if prefix:
            states = plan.store.get(prefix)
            if states is None:
                states = _states(_forward(model, tokens[:, :len(prefix)], None))
                plan.store.put(prefix, [(k.clone(), v.clone()) for k, v in states])
            cache = DynamicCache(ddp_cache_data=list(states), config=model.config)
        rest = tokens[:, len(prefix):]
        if rest.shape[1]:
            cache = _forward(model, rest, cache)
        rows.append(_states(cache))
    merged = []
    for layer in range(len(rows[0])):
        keys, values = [], []
        for states in rows:
            k, v = states[layer]
            pad = (width - 1) - k.shape[-2]
            keys.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
            values.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
        merged.append((torch.cat(keys), torch.cat(values)))
    cache = DynamicCache(ddp_cache_data=merged, config=model.config)
    if room > 0:
        cache.layers = [_room_layer(k, v, room + 1) for k, v in merged]
    return cache
