"""What the whale encoder reads from a VITA-1.5 bundle's ``mm_audio_encoder`` directory: ``train.yaml`` and the
JSON CMVN stats (light: no torch)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vita_framework.errors import CheckpointError


@dataclass
class WhaleConfig:
    """What whale needs from train.yaml; a missing key takes the reference's argparse/constructor default."""

    input_dim: int = 80
    d_model: int = 32
    heads: int = 4
    units: int = 64
    blocks: int = 2
    kernel_size: int = 5
    enc_out_dim: int = 32
    llm_embed_dim: int = 64
    norm: str = "layer"          # adapter norm: layer (LayerNorm eps 1e-3) | batch (BatchNorm1d eps 1e-3)
    activation: str = "gelu"     # adapter activation: gelu | relu
    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length: float = 25.0   # ms
    frame_shift: float = 10.0    # ms
    dither: float = 0.0
    chunk_size: int = -1
    left_chunks: int = -1
    is_json_cmvn: bool = True


def config_from_arch(arch: Any, llm_width: int) -> WhaleConfig:
    """Random-init architecture (no checkpoint): the ``arch`` options with VITA-1.5's fbank settings."""
    return WhaleConfig(input_dim=arch.input_dim, d_model=arch.d_model, heads=arch.attention_heads,
                       units=arch.linear_units, blocks=arch.num_blocks, kernel_size=arch.kernel_size,
                       enc_out_dim=arch.d_model, llm_embed_dim=arch.llm_embed_dim or llm_width,
                       num_mel_bins=arch.input_dim)


def read_whale_config(directory: Path) -> WhaleConfig:
    """Parse ``train.yaml``; variants VITA-1.5 does not use are refused rather than computed wrong."""
    import yaml

    path = directory / "train.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        enc, model, data = raw["encoder_conf"], raw["model_conf"], raw.get("dataset_conf") or {}
        overview, sub, tr = enc["overview_conf"], enc["para_conf"]["subsampling"], enc["para_conf"]["transformer"]
    except FileNotFoundError:
        raise CheckpointError(f"the whale directory has no train.yaml ('{path}')") from None
    except (KeyError, TypeError, yaml.YAMLError) as exc:
        raise CheckpointError(f"'{path}' is not a whale train.yaml: missing or bad {exc}") from None
    d = tr.get("transformer-attention-dim", 256)
    checks = {
        "encoder-layer-config": (overview.get("encoder-layer-config"), "subsampling-transformer"),
        "subsampling-rate": (sub.get("subsampling-rate", 4), 4),
        "transformer-input-layer": (tr.get("transformer-input-layer", "linear"), "linear"),
        "transformer-pos-enc-class": (tr.get("transformer-pos-enc-class", "abs-enc"), "rel-enc"),
        "transformer-normalize-before": (bool(tr.get("transformer-normalize-before", True)), True),
        "transformer-concat-after": (bool(tr.get("transformer-concat-after", False)), False),
        "transformer-positionwise-layer-type": (tr.get("transformer-positionwise-layer-type", "linear"), "linear"),
        "adpter_type": (model.get("adpter_type", "cnn"), "subsampling"),
        "subsampling-output-dim/transformer-input-dim/attention-dim/enc_out_dim": (
            {sub.get("subsampling-output-dim"), tr.get("transformer-input-dim"), d, model.get("enc_out_dim")}, {d}),
    }
    for key, (got, want) in checks.items():
        if got != want:
            raise CheckpointError(f"'{path}': {key} is {got!r}; this whale implementation supports {want!r} only")
    fbank = data.get("fbank_conf") or {}
    return WhaleConfig(
        input_dim=int(sub.get("subsampling-input-dim", overview.get("encoder-input-dim", 80))), d_model=int(d),
        heads=int(tr.get("transformer-attention-heads", 4)), units=int(tr.get("transformer-linear-units", 1024)),
        blocks=int(tr.get("transformer-num-blocks", 6)), kernel_size=int(model.get("kernel_size", 3)),
        enc_out_dim=int(d), llm_embed_dim=int(model.get("llm_embed_dim", 4096)), norm=model.get("norm", "batch"),
        activation=model.get("activation_func", "relu"),
        sample_rate=int((data.get("resample_conf") or {}).get("resample_rate", 16000)),
        num_mel_bins=int(fbank.get("num_mel_bins", 80)), frame_length=float(fbank.get("frame_length", 25)),
        frame_shift=float(fbank.get("frame_shift", 10)), dither=float(fbank.get("dither", 0.0)),
        chunk_size=int(tr.get("transformer-chunk_size", -1)), left_chunks=int(tr.get("transformer-left_chunks", -1)),
        is_json_cmvn=bool(raw.get("is_json_cmvn", True)),
    )


def cmvn_from_json(path: Path) -> tuple[list[float], list[float]]:
    """(mean, istd) from JSON sums, in Python floats like the reference: mean = sum/n,
    var = sumsq/n - mean^2 floored at 1e-20, istd = 1/sqrt(var)."""
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
        count = float(stats["frame_num"])
        mean = [float(s) / count for s in stats["mean_stat"]]
        var = [float(s) / count - m * m for s, m in zip(stats["var_stat"], mean, strict=True)]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot read whale CMVN stats '{path}': {exc}") from None
    return mean, [1.0 / math.sqrt(max(v, 1e-20)) for v in var]


def write_whale_dir(directory: Path, cfg: WhaleConfig, stats: tuple[int, list[float], list[float]] | None = None
                    ) -> None:
    """Write ``train.yaml`` and ``global_cmvn`` for ``cfg`` in the layout :func:`read_whale_config` and
    :func:`cmvn_from_json` read (a trained bundle's ``mm_audio_encoder``). ``stats``: (frames, per-bin sums,
    per-bin sums of squares) of the training features; None writes identity stats (mean 0, variance 1)."""
    import yaml

    d = cfg.d_model
    transformer = {"transformer-input-dim": d, "transformer-output-dim": d, "transformer-attention-dim": d,
                   "transformer-attention-heads": cfg.heads, "transformer-linear-units": cfg.units,
                   "transformer-num-blocks": cfg.blocks, "transformer-input-layer": "linear",
                   "transformer-pos-enc-class": "rel-enc", "transformer-normalize-before": True,
                   "transformer-concat-after": False, "transformer-positionwise-layer-type": "linear",
                   "transformer-chunk_size": cfg.chunk_size, "transformer-left_chunks": cfg.left_chunks}
    raw = {
        "input_dim": cfg.input_dim, "is_json_cmvn": True, "cmvn_file": "global_cmvn",
        "encoder_conf": {
            "overview_conf": {"encoder-input-dim": cfg.input_dim, "encoder-output-dim": d,
                              "encoder-layer-config": "subsampling-transformer"},
            "para_conf": {"subsampling": {"subsampling-rate": 4, "subsampling-input-dim": cfg.input_dim,
                                          "subsampling-output-dim": d},
                          "transformer": transformer}},
        "model_conf": {"enc_out_dim": d, "llm_embed_dim": cfg.llm_embed_dim, "kernel_size": cfg.kernel_size,
                       "adpter_type": "subsampling", "activation_func": cfg.activation, "norm": cfg.norm},
        "dataset_conf": {"resample_conf": {"resample_rate": cfg.sample_rate},
                         "fbank_conf": {"num_mel_bins": cfg.num_mel_bins, "frame_length": cfg.frame_length,
                                        "frame_shift": cfg.frame_shift, "dither": cfg.dither}},
    }
    frames, sums, squares = stats if stats is not None else (1, [0.0] * cfg.input_dim, [1.0] * cfg.input_dim)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    cmvn = {"mean_stat": [float(s) for s in sums], "var_stat": [float(s) for s in squares], "frame_num": int(frames)}
    (directory / "global_cmvn").write_text(json.dumps(cmvn) + "\n", encoding="utf-8")
