"""The heavy part of the whale plugin (imported only when the component is built).

Module and parameter names mirror the VITA-1.5 checkpoint keys under ``model.audio_encoder.`` so the
tensors load strictly, without renaming. Masking follows the reference: padding hides keys only, masked
scores are set to the float16 minimum (-65504, the reference's constant in every dtype) before the softmax
and to 0 after it, so a query that sees no key at all yields zeros instead of NaNs.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vita_framework.devices import torch_dtype
from vita_framework.errors import CheckpointError, InputError
from vita_framework.quantization import quantize
from vita_framework.weights import load_into

from .config import WhaleConfig, cmvn_from_json, config_from_arch, read_whale_config

MASK_VALUE = float(torch.finfo(torch.float16).min)  # -65504.0, as whale's attention
MIN_FRAMES = 7  # fewest fbank frames that still give one token: T1=(T-1)//2, T2=(T1-1)//2 >= 1


@dataclass
class AudioBatch:
    features: torch.Tensor  # [B, Tmax, n_mels] float32 log-mel fbank, zero-padded
    lengths: torch.Tensor   # [B] int64 frame counts


def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """LLM tokens per clip (spec §6.1): conv x4 then the stride-2 adapter, all in integer arithmetic."""
    t2 = ((lengths.long() - 1) // 2 - 1) // 2
    return (t2 + 1) // 2


@functools.lru_cache(maxsize=4)
def _sinusoids(length: int, dim: int) -> torch.Tensor:
    """The reference's fixed table (float32, CPU; max_len 5000, grown instead of failing past it). Made outside
    inference mode even when first asked for inside it: the cached table must also serve training."""
    with torch.inference_mode(False):
        position = torch.arange(0, length, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
        table = torch.zeros(length, dim)
        table[:, 0::2] = torch.sin(position * div)
        table[:, 1::2] = torch.cos(position * div)
    return table


# -- modules (names = checkpoint keys) ---------------------------------------------------------------
class GlobalCMVN(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("istd", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.istd


class Conv2dSubsampling4(nn.Module):
    def __init__(self, idim: int, odim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, odim, 3, 2), nn.ReLU(), nn.Conv2d(odim, odim, 3, 2), nn.ReLU())
        self.out = nn.Sequential(nn.Linear(odim * (((idim - 1) // 2 - 1) // 2), odim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.unsqueeze(1))
        b, c, t, f = x.shape
        return self.out(x.transpose(1, 2).reshape(b, t, c * f))  # channel-major, as the checkpoint expects


class Subsampling(nn.Module):
    def __init__(self, idim: int, odim: int) -> None:
        super().__init__()
        self.core = Conv2dSubsampling4(idim, odim)


class RelPositionAttention(nn.Module):
    """Self-attention with learned biases u, v on content and (absolute) position; rel_shift is off."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.h, self.d_k = heads, d // heads
        self.linear_q, self.linear_k = nn.Linear(d, d), nn.Linear(d, d)
        self.linear_v, self.linear_out = nn.Linear(d, d), nn.Linear(d, d)
        self.linear_pos = nn.Linear(d, d, bias=False)
        self.pos_bias_u = nn.Parameter(nn.init.xavier_uniform_(torch.empty(heads, self.d_k)))
        self.pos_bias_v = nn.Parameter(nn.init.xavier_uniform_(torch.empty(heads, self.d_k)))

    def forward(self, x: torch.Tensor, visible: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, h, d_k = x.shape[0], self.h, self.d_k
        q = self.linear_q(x).view(b, -1, h, d_k)
        k = self.linear_k(x).view(b, -1, h, d_k).transpose(1, 2)
        v = self.linear_v(x).view(b, -1, h, d_k).transpose(1, 2)
        p = self.linear_pos(pos.to(x.dtype)).view(1, -1, h, d_k).transpose(1, 2)
        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        position = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
        hidden = ~visible.unsqueeze(1)  # [B, 1, T or 1, T]
        scores = ((content + position) / math.sqrt(d_k)).masked_fill(hidden, MASK_VALUE)
        attn = torch.softmax(scores, dim=-1).masked_fill(hidden, 0.0)
        return self.linear_out(torch.matmul(attn, v).transpose(1, 2).reshape(b, -1, h * d_k))


class FeedForward(nn.Module):
    def __init__(self, d: int, units: int) -> None:
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(d, units), nn.Linear(units, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(torch.relu(self.w_1(x)))


class TransformerLayer(nn.Module):
    def __init__(self, d: int, heads: int, units: int) -> None:
        super().__init__()
        self.self_attn, self.feed_forward = RelPositionAttention(d, heads), FeedForward(d, units)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, visible: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), visible, pos)
        return x + self.feed_forward(self.norm2(x))


class Transformer(nn.Module):
    def __init__(self, d: int, heads: int, units: int, blocks: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d), nn.Dropout(0.1), nn.ReLU())
        self.encoders = nn.ModuleList(TransformerLayer(d, heads, units) for _ in range(blocks))
        self.after_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        x = self.embed(x) * math.sqrt(x.shape[-1])  # positions are NOT added to x (rel-enc)
        length, dim = x.shape[1], x.shape[-1]
        pos = _sinusoids(max(5000, length), dim)[:length].to(x.device).unsqueeze(0)
        for layer in self.encoders:
            x = layer(x, visible, pos)
        return self.after_norm(x)


class WhaleEncoder(nn.Module):
    def __init__(self, cfg: WhaleConfig) -> None:
        super().__init__()
        self.global_cmvn = GlobalCMVN(cfg.input_dim)
        self.enc = nn.ModuleList([Subsampling(cfg.input_dim, cfg.d_model),
                                  Transformer(cfg.d_model, cfg.heads, cfg.units, cfg.blocks)])


class CNNSubsampling(nn.Module):
    """Adapter: zero the padded frames, right-pad k-1, Conv1d stride 2, norm, activation, Linear."""

    def __init__(self, cfg: WhaleConfig) -> None:
        super().__init__()
        d, k = cfg.enc_out_dim, cfg.kernel_size
        self.conv1d2 = nn.Conv1d(d, 2 * d, k, 2, 0)
        if cfg.norm not in ("layer", "batch") or cfg.activation not in ("gelu", "relu"):
            raise CheckpointError(f"whale adapter norm={cfg.norm!r} activation_func={cfg.activation!r} unsupported")
        self.bn2 = nn.LayerNorm(2 * d, eps=1e-3) if cfg.norm == "layer" else nn.BatchNorm1d(2 * d, eps=1e-3)
        self.act = nn.GELU() if cfg.activation == "gelu" else nn.ReLU()
        self.project = nn.Linear(2 * d, cfg.llm_embed_dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = x.masked_fill(~valid.unsqueeze(-1), 0.0).transpose(1, 2)
        x = self.conv1d2(nn.functional.pad(x, (0, self.conv1d2.kernel_size[0] - 1)))
        x = self.bn2(x.transpose(1, 2)).transpose(1, 2) if isinstance(self.bn2, nn.LayerNorm) else self.bn2(x)
        return self.project(self.act(x).transpose(1, 2))


class WhaleAudioEncoder(nn.Module):
    """Waveforms -> fbank -> whale encoder + adapter -> one ``[tokens, hidden_size]`` tensor per clip."""

    def __init__(self, cfg: WhaleConfig, options: Any) -> None:
        super().__init__()
        self.encoder, self.adpter = WhaleEncoder(cfg), CNNSubsampling(cfg)
        self.cfg, self.sample_rate, self.max_seconds = cfg, cfg.sample_rate, float(options.max_seconds)
        self.hidden_size = cfg.llm_embed_dim
        self.dither = cfg.dither if options.dither is None else float(options.dither)
        # static chunks only: the reference's random "dynamic chunks" would make inference non-deterministic
        self.chunk_size = cfg.chunk_size if options.chunk_size is None else int(options.chunk_size)
        self.left_chunks = cfg.left_chunks if options.left_chunks is None else int(options.left_chunks)

    @classmethod
    def from_options(cls, options: Any, context: Any) -> WhaleAudioEncoder:
        """Config from the bundle's ``mm_audio_encoder`` dir, tensors from the main checkpoint.

        CMVN: the reference computes mean/istd from ``global_cmvn`` (JSON) and then the main checkpoint
        overwrites those buffers, so ``encoder.global_cmvn.{mean,istd}`` from the checkpoint win when present;
        the JSON stats are used only when the checkpoint lacks them.
        """
        bundle, llm = context.checkpoint, context.components.get("llm")
        if bundle is None:
            cfg = config_from_arch(options.arch, int(getattr(llm, "hidden_size", 64)))
            warnings.warn("audio 'whale' has RANDOM weights (no checkpoint given); CMVN is identity", stacklevel=2)
            module = cls(cfg, options)
        else:
            directory = bundle.resolve("mm_audio_encoder")
            cfg = read_whale_config(directory)
            state = bundle.load(options.weights_prefix)
            if not state:
                raise CheckpointError(f"checkpoint '{bundle.path}' has no audio tensors under "
                                      f"'{options.weights_prefix}'; drop +audio or use a checkpoint with whale")
            if "encoder.global_cmvn.mean" not in state and "encoder.global_cmvn.istd" not in state:
                if not cfg.is_json_cmvn:
                    raise CheckpointError(f"'{directory}': only JSON CMVN stats are supported (is_json_cmvn)")
                mean, istd = cmvn_from_json(directory / "global_cmvn")  # Python floats (float64), as the reference
                state["encoder.global_cmvn.mean"] = torch.tensor(mean, dtype=torch.float32)
                state["encoder.global_cmvn.istd"] = torch.tensor(istd, dtype=torch.float32)
            with torch.device("meta"):
                module = cls(cfg, options)
            load_into(module, state, what=f"whale audio encoder from '{bundle.path}' "
                                          f"(prefix {options.weights_prefix}, config '{directory / 'train.yaml'}')")
        if llm is not None and int(getattr(llm, "hidden_size", module.hidden_size)) != module.hidden_size:
            raise CheckpointError(f"whale's adapter outputs {module.hidden_size} features but the LLM's hidden size "
                                  f"is {llm.hidden_size}")
        if module.dither != 0.0:
            warnings.warn(f"whale dither={module.dither}: audio features are random on every call", stacklevel=2)
        module.to(device=context.device, dtype=torch_dtype(context.dtype)).eval()
        return quantize(module, options.quantization, device=context.device, dtype=context.dtype, what="audio")

    # -- preprocessing -------------------------------------------------------------------------------
    def preprocess(self, waveforms: list[torch.Tensor], sample_rate: int) -> AudioBatch:
        """Kaldi fbank of each clip (scaled to the int16 range first, as the reference), zero-padded."""
        from .fbank import kaldi_fbank

        if int(sample_rate) != self.sample_rate:
            raise InputError(f"whale needs {self.sample_rate} Hz audio; got {sample_rate} Hz (resample first)")
        feats = []
        for i, wave in enumerate(waveforms):
            wave = torch.as_tensor(wave, dtype=torch.float32).cpu()
            wave = wave[0] if wave.dim() == 2 else wave  # channel 0, as kaldi.fbank
            if wave.dim() != 1:
                raise InputError(f"audio clip {i}: expected a 1-D waveform, got shape {tuple(wave.shape)}")
            if wave.numel() > self.max_seconds * self.sample_rate:
                raise InputError(f"audio clip {i} lasts {wave.numel() / self.sample_rate:.1f} s; whale accepts at "
                                 f"most audio.max_seconds={self.max_seconds:g} s")
            min_samples = int(self.sample_rate * (self.cfg.frame_length + (MIN_FRAMES - 1) * self.cfg.frame_shift)
                              / 1000)
            if wave.numel() < min_samples:
                raise InputError(f"audio clip {i} has {wave.numel()} samples; whale needs at least {min_samples} "
                                 f"({1000 * min_samples / self.sample_rate:g} ms) for one token")
            feats.append(kaldi_fbank(wave * 32768.0, num_mel_bins=self.cfg.num_mel_bins,
                                     frame_length_ms=self.cfg.frame_length, frame_shift_ms=self.cfg.frame_shift,
                                     dither=self.dither, energy_floor=0.0, sample_frequency=float(self.sample_rate)))
        if not feats:
            raise InputError("no audio clips to preprocess")
        lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.int64)
        return AudioBatch(nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths)

    # -- encoding ------------------------------------------------------------------------------------
    def planned_tokens(self, batch: AudioBatch) -> list[int]:
        """Tokens each clip will take, known before encoding (the pipeline's context-budget check)."""
        return output_lengths(batch.lengths).tolist()

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        return dict(self.state_dict())

    def encode(self, batch: AudioBatch) -> list[torch.Tensor]:
        return self.encode_features(batch.features, batch.lengths)

    @torch.inference_mode()
    def encode_features(self, features: torch.Tensor, lengths: Any) -> list[torch.Tensor]:
        """fbank ``[B, T, n_mels]`` + frame counts -> one ``[ceil(T2/2), hidden]`` tensor per clip."""
        lengths = torch.as_tensor(lengths).reshape(-1)
        if lengths.is_floating_point() and not torch.equal(lengths, lengths.round()):  # the demo passes fp16
                raise InputError(f"audio lengths must be whole frame counts; got {lengths.tolist()}")
        lengths = lengths.round().long().cpu()
        if features.dim() != 3 or features.shape[-1] != self.cfg.input_dim or features.shape[0] != len(lengths):
            raise InputError(f"whale expects fbank [B, T, {self.cfg.input_dim}] with B={len(lengths)} lengths; "
                             f"got {tuple(features.shape)}")
        max_frames = int(self.max_seconds * 1000 / self.cfg.frame_shift) + 1
        for i, n in enumerate(lengths.tolist()):
            if not MIN_FRAMES <= n <= features.shape[1]:
                raise InputError(f"audio clip {i} has {n} fbank frames (batch holds {features.shape[1]}); whale "
                                 f"needs at least {MIN_FRAMES} frames (~85 ms) to produce one token")
            if n > max_frames:
                raise InputError(f"audio clip {i} has {n} frames; audio.max_seconds={self.max_seconds:g} allows "
                                 f"{max_frames}")
        param = self.adpter.project.weight
        x = features[:, : int(lengths.max())].to(device=param.device, dtype=param.dtype)
        out = self._forward(x, lengths.to(param.device))
        return [row[:n] for row, n in zip(out, output_lengths(lengths).tolist())]

    def _forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Padded batch -> adapter output ``[B, ceil(T2/2), hidden]`` (rows past a clip's length are junk)."""
        valid = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
        x = self.encoder.global_cmvn(x)
        x = self.encoder.enc[0].core(x)
        valid = valid[:, 2::2][:, 2::2]  # [B, T2]
        visible = valid.unsqueeze(1)  # keys only: [B, 1, T2]
        if self.chunk_size > 0:
            chunk = torch.arange(x.shape[1], device=x.device) // self.chunk_size
            see = chunk.unsqueeze(0) <= chunk.unsqueeze(1)
            if self.left_chunks >= 0:
                see &= chunk.unsqueeze(0) >= chunk.unsqueeze(1) - self.left_chunks
            visible = visible & see.unsqueeze(0)  # [B, T2, T2]
        x = self.encoder.enc[1](x, visible)
        return self.adpter(x, valid)
