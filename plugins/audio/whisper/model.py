"""The heavy part of the Whisper audio plugin."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vita_framework.devices import torch_dtype
from vita_framework.errors import CheckpointError, ConfigError, InputError
from vita_framework.quantization import quantize
from vita_framework.weights import load_into, read_json, resolve_local_dir

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30
FRAMES_PER_SECOND = 50  # encoder output frames per second (hop 160, then stride-2 conv)


@dataclass
class WhisperBatch:
    windows: list[list[torch.Tensor]]  # per clip, its <=30 s pieces


class WhisperAudioEncoder(nn.Module):
    sample_rate = SAMPLE_RATE

    def __init__(self, encoder: nn.Module, projector: nn.Linear, extractor: Any, options: Any) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.extractor = extractor
        self.pool = options.pool
        self.max_seconds = options.max_seconds
        self.hidden_size = projector.out_features

    @classmethod
    def from_options(cls, options: Any, context: Any) -> WhisperAudioEncoder:
        from transformers import WhisperConfig, WhisperFeatureExtractor
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        if options.pool < 1:
            raise ConfigError(f"audio.pool must be >= 1; got {options.pool}")
        llm = context.components.get("llm")
        if llm is None:
            raise ConfigError("the whisper audio encoder needs the LLM built first (its width)")
        state: dict[str, torch.Tensor] = {}
        if options.model:
            base = context.checkpoint.path if context.checkpoint is not None else Path.cwd()
            model_dir = resolve_local_dir(options.model, base=base, what="audio.model")
            raw = read_json(model_dir / "config.json")
            config = WhisperConfig(**{k: v for k, v in raw.items() if not k.startswith("_")})
            from safetensors.torch import load_file

            files = sorted(model_dir.glob("*.safetensors"))
            if not files:
                raise CheckpointError(f"no safetensors weights in Whisper directory '{model_dir}'")
            for file in files:
                for key, tensor in load_file(str(file)).items():
                    for prefix in ("model.encoder.", "encoder."):
                        if key.startswith(prefix):
                            state["encoder." + key[len(prefix):]] = tensor
            extractor = WhisperFeatureExtractor.from_pretrained(str(model_dir), trust_remote_code=False) \
                if (model_dir / "preprocessor_config.json").is_file() else None
        else:
            a = options.arch
            config = WhisperConfig(d_model=a.d_model, encoder_layers=a.encoder_layers, decoder_layers=1,
                                   encoder_attention_heads=a.encoder_attention_heads, decoder_attention_heads=1,
                                   encoder_ffn_dim=a.encoder_ffn_dim, decoder_ffn_dim=8, num_mel_bins=a.num_mel_bins,
                                   vocab_size=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                   decoder_start_token_id=1, suppress_tokens=[], begin_suppress_tokens=[])
            extractor = None
        if extractor is None:
            extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=SAMPLE_RATE)
        bundle = context.checkpoint
        if bundle is not None and bundle.has_prefix(options.weights_prefix):
            state.update(bundle.load(options.weights_prefix))
        encoder = WhisperEncoder(config)
        projector = nn.Linear(config.d_model, llm.hidden_size)
        module = cls(encoder, projector, extractor, options)
        if state:
            projector_keys = {k for k in state if k.startswith("projector.")}
            if not projector_keys:
                warnings.warn("whisper: no projector tensors found; the projector is RANDOM", stacklevel=2)
                state.update({f"projector.{k}": v for k, v in projector.state_dict().items()})
            load_into(module, dict(state.items()), what="whisper audio encoder",
                      ignore_missing=("embed_positions.weight",))
        else:
            warnings.warn("audio 'whisper' has RANDOM weights (no audio.model and no bundle tensors)", stacklevel=2)
        module.to(device=context.device, dtype=torch_dtype(context.dtype)).eval()
        return quantize(module, options.quantization, device=context.device, dtype=context.dtype, what="audio")

    def preprocess(self, waveforms: list[torch.Tensor], sample_rate: int) -> WhisperBatch:
        if sample_rate != SAMPLE_RATE:
            raise InputError(f"whisper needs {SAMPLE_RATE} Hz audio; got {sample_rate} Hz")
        step = WINDOW_SECONDS * SAMPLE_RATE
        windows = []
        for i, wave in enumerate(waveforms):
            if wave.numel() == 0:
                raise InputError(f"audio clip {i} has no samples")
            windows.append([wave[s:s + step] for s in range(0, wave.numel(), step)])
        return WhisperBatch(windows)

    def planned_tokens(self, batch: WhisperBatch) -> list[int]:
        """Rows per clip: 50 encoder frames per second of each window (at least one), average-pooled by ``pool``."""
        frames = [sum(max(1, math.ceil(p.numel() * FRAMES_PER_SECOND / SAMPLE_RATE)) for p in pieces)
                  for pieces in batch.windows]
        return [math.ceil(n / self.pool) for n in frames]

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """``encoder.*`` (WhisperEncoder) and ``projector.*``, as ``from_options`` reads them under the prefix."""
        return dict(self.state_dict())

    @torch.inference_mode()
    def encode(self, batch: WhisperBatch) -> list[torch.Tensor]:
        param = next(self.parameters())
        out = []
        for pieces in batch.windows:
            feats = self.extractor([p.float().numpy() for p in pieces], sampling_rate=SAMPLE_RATE,
                                   return_tensors="pt")["input_features"]
            hidden = self.encoder(feats.to(device=param.device, dtype=param.dtype)).last_hidden_state
            kept = [h[: max(1, math.ceil(p.numel() * FRAMES_PER_SECOND / SAMPLE_RATE))]
                    for h, p in zip(hidden, pieces)]
            frames = torch.cat(kept)
            if self.pool > 1:
                frames = nn.functional.avg_pool1d(frames.T.unsqueeze(0), self.pool, self.pool,
                                                  ceil_mode=True).squeeze(0).T
            out.append(self.projector(frames))
        return out
