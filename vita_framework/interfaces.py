"""Component protocols and the records that flow between them (design.md §1, §5).

The pipeline only talks to components through these. Encoders never see the tokenizer, fusion never sees
a file, and the LLM backbone never sees an image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class VisionEncoder(Protocol):
    hidden_size: int

    def preprocess(self, images: list[Any]) -> Any:
        """PIL images -> a batch; ``batch.tiles_per_image`` tells how many tiles each image became."""

    def preprocess_frames(self, frames: list[Any]) -> Any:
        """Video frames (PIL) -> a batch with one tile per frame."""

    def encode(self, batch: Any) -> list[Any]:
        """One ``[tokens, hidden_size]`` tensor per tile or frame."""


@runtime_checkable
class AudioEncoder(Protocol):
    hidden_size: int

    def preprocess(self, waveforms: list[Any], sample_rate: int) -> Any: ...

    def encode(self, batch: Any) -> list[Any]:
        """One ``[tokens, hidden_size]`` tensor per clip, already at the LLM width."""


@runtime_checkable
class Projector(Protocol):
    def __call__(self, features: Any) -> Any: ...


@runtime_checkable
class FusionStrategy(Protocol):
    def reduce(self, modality: str, features: list[Any], groups: list[int]) -> list[Any]:
        """Shrink features before splicing (e.g. slow-fast pooling of video frames); ``groups`` holds one id
        per feature tensor (0 for still images, k>0 for frames of video k)."""

    def fuse(self, input_ids: Any, attention_mask: Any, embed: Any, features: dict[str, list[Any]],
             placeholder_ids: dict[str, int]) -> FusedInputs: ...


@runtime_checkable
class LLMBackbone(Protocol):
    hidden_size: int
    tokenizer: Any

    def embed(self, input_ids: Any) -> Any: ...

    def generate(self, fused: FusedInputs, generation_config: Any, streamer: Any = None) -> Any: ...


@dataclass
class FusedInputs:
    """What the LLM receives: embeddings with every placeholder replaced by its features."""

    inputs_embeds: Any
    attention_mask: Any
    #: per row, how many positions each modality took (text, image, video, audio)
    tokens_by_modality: list[dict[str, int]] = field(default_factory=list)
