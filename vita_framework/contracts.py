"""What every component must offer, one Protocol per kind, and the records components exchange.

Components wrap third-party models (transformers, timm, plain ``nn.Module``), so they are not asked to inherit
anything: a component satisfies its contract by having the members listed here. :func:`missing_members` is how
``Registry.build`` checks each built component, so a plugin that forgets a member fails at build time with its
plugin, component and member named, not later inside the pipeline. Every member is written as a method or a
property with a docstring; a meta-test keeps it so.

The flow (design.md §1): encoders turn a modality's items into one feature tensor per *segment* (a tile, a
frame, a clip), projectors map vision features to the LLM width, the fusion strategy reduces and splices them
into the text embeddings, and the LLM generates from the result.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol


# -- records ----------------------------------------------------------------------------------------------
@dataclass
class VisionBatch:
    """Preprocessed pixels of some images or frames: ``pixel_values`` is ``[tiles, 3, H, W]``."""

    pixel_values: Any
    #: how many tiles each image (or frame) became, in input order
    tiles_per_item: list[int]


@dataclass
class EncoderInput:
    """What a modality's ``prepare`` hands the pipeline: the encoder's batch and its segments per item.

    ``segments[i]`` is how many feature tensors item ``i`` yields (tiles of an image, frames of a video, 1 for an
    audio clip); the prompt gets one placeholder run per segment.
    """

    batch: Any
    segments: list[int]


@dataclass
class FusedInputs:
    """What the LLM receives: embeddings with every placeholder replaced by its features."""

    inputs_embeds: Any
    attention_mask: Any
    #: a :class:`~vita_framework.prefix_cache.PrefixPlan` when the pipeline shares prompt-prefix states
    #: (``prefix_cache_mb``): an LLM that keeps a KV cache may prefill row by row from it; others ignore it
    prefix: Any = None
    #: a :class:`PrefillPruning` when the fusion asks the LLM to drop visual positions inside its prefill
    #: (``fusion=fastv``); only an LLM offering :class:`PrefillPruningLLM` receives one
    pruning: Any = None


@dataclass
class PrefillPruning:
    """FastV-style pruning inside the LLM's prefill, as the fusion asks for it (``FusedInputs.pruning``).

    Layers ``0 .. layer-1`` see every position; the attention the last prompt position pays in layer ``layer-1``
    ranks each row's prunable positions, and layers ``layer ..`` (and their KV cache) keep only the best
    ``keep[row]`` of them plus every other real position, at their original positions (RoPE numbering is kept).
    """

    #: bool ``[B, T]``: the positions that may be dropped (the visual placeholders of the padded batch)
    positions: Any
    #: per row, how many of its prunable positions stay after ``layer`` (the fusion's ``pruned_tokens`` summed)
    keep: list[int]
    #: the first layer that sees only the kept positions (FastV's K); None: the LLM's default
    layer: int | None = None


# -- component contracts ----------------------------------------------------------------------------------
class Encoder(Protocol):
    """An encoder for any modality: items -> batch -> one ``[tokens, hidden_size]`` tensor per segment."""

    @property
    def hidden_size(self) -> int:
        """Width of every feature row ``encode`` returns (the projector's input, or the LLM width)."""

    def preprocess(self, items: list[Any]) -> Any:
        """Loaded items (PIL images, arrays, ...) -> the batch ``encode`` takes; no model runs here."""

    def planned_tokens(self, batch: Any) -> list[int]:
        """Feature rows each segment of ``batch`` will have, known before encoding (sizes the prompt budget)."""

    def encode(self, batch: Any) -> list[Any]:
        """One ``[tokens, hidden_size]`` tensor per segment, in batch order."""

    def checkpoint_state(self) -> dict[str, Any]:
        """Tensors to save, named as this component's loader reads them (relative to its weights prefix)."""


class VisionEncoder(Encoder, Protocol):
    """Images (tiled) and video frames (one tile each) -> feature tensors per tile or frame."""

    def preprocess(self, items: list[Any]) -> VisionBatch:
        """PIL images -> a :class:`VisionBatch`; ``tiles_per_item`` says how many tiles each image became."""

    def preprocess_frames(self, frames: list[Any]) -> VisionBatch:
        """Video frames (PIL) -> a :class:`VisionBatch` with one tile per frame."""


class AudioEncoder(Protocol):
    """Waveforms -> one feature tensor per clip, already at the LLM width (its own adapter included)."""

    @property
    def hidden_size(self) -> int:
        """Width of the encoded rows; must equal the LLM's hidden size."""

    @property
    def sample_rate(self) -> int:
        """Sample rate the encoder expects; audio is resampled to it when loaded."""

    @property
    def max_seconds(self) -> float:
        """Longest clip accepted; longer ones are refused when loaded, before any decoding work."""

    def preprocess(self, waveforms: list[Any], sample_rate: int) -> Any:
        """1-D float waveforms at ``sample_rate`` -> the batch ``encode`` takes (features, lengths, ...)."""

    def planned_tokens(self, batch: Any) -> list[int]:
        """Rows each clip will have after encoding, known before encoding."""

    def encode(self, batch: Any) -> list[Any]:
        """One ``[tokens, hidden_size]`` tensor per clip."""

    def checkpoint_state(self) -> dict[str, Any]:
        """Tensors to save, named as this component's loader reads them (relative to its weights prefix)."""


class Projector(Protocol):
    """Maps encoder features to the LLM width, possibly changing the number of tokens per segment."""

    def __call__(self, features: Any) -> Any:
        """``[segments, tokens, width_in]`` -> ``[segments, tokens_out(tokens), llm width]``."""

    def tokens_out(self, tokens: int) -> int:
        """Tokens per segment after projection for ``tokens`` in (a resampler returns its query count)."""

    def checkpoint_state(self) -> dict[str, Any]:
        """Tensors to save, named as this component's loader reads them (relative to its weights prefix)."""


class FusionStrategy(Protocol):
    """Reduces encoded features per placeholder stream and splices them into the text embeddings."""

    def reduced_tokens(self, stream: str, tokens: list[int], groups: list[int]) -> list[int]:
        """Rows each segment keeps after :meth:`reduce`, from planned counts (sizes the prompt before encoding)."""

    def reduce(self, stream: str, features: list[Any], groups: list[int]) -> list[Any]:
        """Shrink a stream's features before splicing; ``groups`` has one id per tensor (0: a still item,
        k > 0: segment of the k-th grouped item, e.g. frames of one video, which slow-fast pools together)."""

    def fuse(self, input_ids: Any, attention_mask: Any, embed: Any, features: dict[str, list[Any]],
             placeholder_ids: dict[str, int]) -> FusedInputs:
        """Embed ``input_ids`` and put each stream's feature rows at its placeholder positions, in order."""

    def checkpoint_state(self) -> dict[str, Any]:
        """Tensors to save (usually none: fusion strategies rarely have weights)."""


class LLMBackbone(Protocol):
    """A tokenizer and a causal LM that generates from ``inputs_embeds``."""

    @property
    def hidden_size(self) -> int:
        """Embedding width: projectors and audio adapters map to it."""

    @property
    def tokenizer(self) -> Any:
        """A transformers tokenizer (``__call__``, ``decode``, ``pad_token_id``, ``eos_token_id``)."""

    @property
    def device(self) -> Any:
        """Where fused embeddings must live."""

    @property
    def context_length(self) -> int | None:
        """Longest sequence the model accepts (positions), or None when unbounded; checked before encoding."""

    def embed(self, input_ids: Any) -> Any:
        """Token ids -> input embeddings."""

    def generation_config(self, options: dict[str, Any]) -> Any:
        """The ``generation`` options merged over the checkpoint's defaults, as this backend's config object."""

    def generate(self, fused: FusedInputs, generation_config: Any, *, streamer: Any = None,
                 seed: int | None = None, cancel: threading.Event | None = None) -> Any:
        """New tokens for every row; returns an object with ``sequences`` (and ``scores`` when asked).

        ``seed`` seeds this call's own random generator; None draws fresh randomness, so repeated sampling
        calls differ. The global torch RNG is never touched. Once ``cancel`` is set (from any thread),
        generation stops within one decode step and returns what it has: rows end early, without an eos and
        without an error. Output that cannot be meaningful (non-finite logits) raises
        :class:`~vita_framework.errors.GenerationError`."""

    def checkpoint_state(self) -> dict[str, Any]:
        """Tensors to save under their full bundle names (the LLM takes the keys no other component claims)."""


# -- optional capabilities (not required by the registry; looked up with getattr) ------------------------------
class PruningFusion(FusionStrategy, Protocol):
    """A fusion strategy whose LLM prunes some rows during prefill (``fastv``): the prompt holds every row of
    :meth:`reduced_tokens`, but fewer reach the LLM's later layers. The preparer counts those in ``tokens_in``."""

    def pruned_tokens(self, stream: str, tokens: list[int], groups: list[int]) -> list[int]:
        """Rows of each segment the LLM keeps after its pruning layer (what ``tokens_in`` reports per modality)."""


class PrefillPruningLLM(LLMBackbone, Protocol):
    """An LLM that honours :class:`PrefillPruning` in ``generate`` (``vita_framework.causal_lm.CausalLMBackbone``)."""

    def prefill_pruning_layer(self, layer: int | None) -> int:
        """The pruning layer ``layer`` resolves to for this model (None: its default), checked before any encoding;
        raises :class:`~vita_framework.errors.ConfigError` naming the option to change when this model cannot prune
        there (an attention implementation that cannot expose scores, too few layers)."""


class ContinuousBatchingLLM(LLMBackbone, Protocol):
    """An LLM whose engine batches concurrent requests itself at every step (``llm=vllm`` in a server): the
    server hands it each request as it arrives instead of gathering batches
    (:class:`~vita_framework.serve.continuous.ContinuousEngine`)."""

    @property
    def continuous_batching(self) -> bool:
        """True when :meth:`agenerate` calls from concurrent tasks are batched by the engine."""

    def agenerate(self, fused: FusedInputs, generation_config: Any, *, seed: int | None = None) -> Any:
        """An async iterator over one row's generation (``fused`` of batch size 1): items with ``token_ids``
        (new since the last item), ``finished`` and ``finish_reason``; closing it early aborts the request."""


#: contract of each kind the core defines; encoder kinds get theirs from the modalities they serve
CORE_CONTRACTS: dict[str, type] = {"projector": Projector, "fusion": FusionStrategy, "llm": LLMBackbone}


def contract_members(contract: type) -> list[str]:
    """Public members a contract declares, its bases' included (``__call__`` counts as public)."""
    names: dict[str, None] = {}
    for klass in reversed(contract.__mro__):
        if klass is object or klass is Protocol or klass.__module__ == "typing":
            continue
        for name, value in vars(klass).items():
            if (name == "__call__" or not name.startswith("_")) and (callable(value) or isinstance(value, property)):
                names[name] = None
    return list(names)


def missing_members(component: Any, contracts: list[type]) -> list[str]:
    """Members of ``contracts`` that ``component`` lacks (``__call__`` must be callable)."""
    missing = []
    for contract in contracts:
        for name in contract_members(contract):
            present = callable(component) if name == "__call__" else hasattr(component, name)
            if not present and name not in missing:
                missing.append(name)
    return missing
