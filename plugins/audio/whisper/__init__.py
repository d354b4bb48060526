"""Whisper audio encoder (transformers ``WhisperEncoder``) + a linear projector to the LLM width.

Shows the audio encoder is swappable by config alone (``+audio=whisper``). Whisper's encoder only accepts
a fixed 30 s window: shorter clips are padded and the output trimmed to the clip's real duration; longer
clips are split into 30 s windows whose trimmed outputs are concatenated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vita_framework.hookspecs import hookimpl
from vita_framework.quantization import check_mode


@dataclass
class WhisperArch:
    d_model: int = 64
    encoder_layers: int = 2
    encoder_attention_heads: int = 4
    encoder_ffn_dim: int = 128
    num_mel_bins: int = 80


@dataclass
class WhisperOptions:
    #: a local Whisper checkpoint directory (config.json + safetensors) or a hub id in the local cache;
    #: None: tensors from the bundle under weights_prefix, else random init from `arch` (warning)
    model: str | None = None
    weights_prefix: str = "model.audio_whisper."
    pool: int = 4              # average-pool this many encoder frames (50/s) into one LLM token
    max_seconds: float = 600.0
    quantization: str | None = None  # int8 | int4 (torchao) | bnb_int8 | bnb_nf4 (CUDA): encoder and projector Linears
    arch: WhisperArch = field(default_factory=WhisperArch)

    def __post_init__(self) -> None:
        check_mode(self.quantization, "audio.quantization")


def build_whisper(options: WhisperOptions, context: Any) -> Any:
    from .model import WhisperAudioEncoder

    return WhisperAudioEncoder.from_options(options, context)


@hookimpl
def vita_register_audio_encoders(register):
    register("whisper", build_whisper, schema=WhisperOptions,
             description="transformers WhisperEncoder (30 s windows) + pooling + Linear to the LLM width")
