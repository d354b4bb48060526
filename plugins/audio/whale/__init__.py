"""Whale audio encoder (VITA-1.5's own): kaldi fbank -> CMVN -> conv subsampling x4 -> transformer with a
relative-position bias -> CNN adapter (stride 2) to the LLM width. About 12.5 LLM tokens per second.

The architecture, fbank options and CMVN stats come from the bundle's ``mm_audio_encoder`` directory
(``train.yaml`` and ``global_cmvn``); every tensor comes from the main checkpoint (``final.pt`` is never
opened). Unlike the reference, nothing here reads ``sys.argv`` and inference never draws random chunk masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vita_framework.hookspecs import hookimpl
from vita_framework.quantization import check_mode


@dataclass
class WhaleArch:
    """Architecture used only for random init (no checkpoint); a checkpoint's train.yaml replaces it."""

    d_model: int = 32
    attention_heads: int = 4
    linear_units: int = 64
    num_blocks: int = 2
    kernel_size: int = 5
    input_dim: int = 80
    #: adapter output width; None: the built LLM's hidden size (64 when no LLM was built)
    llm_embed_dim: int | None = None


@dataclass
class WhaleOptions:
    weights_prefix: str = "model.audio_encoder."
    #: longer clips are refused with an error (attention cost grows with the square of the length)
    max_seconds: float = 600.0
    #: kaldi dither; None: train.yaml's dataset_conf.fbank_conf.dither (non-zero makes features random)
    dither: float | None = None
    #: static chunk mask; None: train.yaml's transformer-chunk_size / transformer-left_chunks.
    #: chunk_size <= 0 means full attention; left_chunks < 0 means all previous chunks.
    chunk_size: int | None = None
    left_chunks: int | None = None
    quantization: str | None = None  # int8 | int4 (torchao) | bnb_int8 | bnb_nf4 (CUDA): encoder and adapter Linears
    arch: WhaleArch = field(default_factory=WhaleArch)

    def __post_init__(self) -> None:
        check_mode(self.quantization, "audio.quantization")


def build_whale(options: WhaleOptions, context: Any) -> Any:
    from .model import WhaleAudioEncoder

    return WhaleAudioEncoder.from_options(options, context)


@hookimpl
def vita_register_audio_encoders(register):
    register("whale", build_whale, schema=WhaleOptions,
             description="VITA-1.5 whale: fbank + conv x4 + rel-pos transformer + CNN adapter (12.5 tokens/s)")
