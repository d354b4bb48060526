"""InternViT tensor names: the reference checkpoint's <-> transformers ``InternVLVisionModel``'s.

One table, read in both directions: loading a VITA-1.5 bundle renames reference keys (and splits the fused
``attn.qkv`` into q/k/v); saving a bundle does the reverse, so what we write is what the reference reads.
"""

from __future__ import annotations

import re
from typing import Any

from vita_framework.errors import CheckpointError

#: whole-key renames outside the layers (reference -> transformers)
TOP_LEVEL = {
    "embeddings.class_embedding": "embeddings.cls_token",
    "embeddings.position_embedding": "embeddings.position_embeddings",
    "embeddings.patch_embedding.weight": "embeddings.patch_embeddings.projection.weight",
    "embeddings.patch_embedding.bias": "embeddings.patch_embeddings.projection.bias",
}
#: per-layer sub-module renames (reference -> transformers); qkv is handled separately
LAYER_PARTS = {
    "attn.proj": "attention.projection_layer", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
    "norm1": "layernorm_before", "norm2": "layernorm_after", "ls1": "lambda_1", "ls2": "lambda_2",
    "attn.q_norm": "attention.q_norm", "attn.k_norm": "attention.k_norm",
}
REF_LAYER, HF_LAYER = "encoder.layers.", "encoder.layer."
QKV = ("q_proj", "k_proj", "v_proj")


def _rename_part(rest: str, table: dict[str, str]) -> str | None:
    for src, dst in table.items():
        if rest == src or rest.startswith(src + "."):
            return dst + rest[len(src):]
    return None


def from_reference(state: dict[str, Any], hidden: int) -> dict[str, Any]:
    """Reference names -> transformers names; unknown keys pass through (``load_into`` reports them)."""
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        if key in TOP_LEVEL:
            out[TOP_LEVEL[key]] = tensor
            continue
        if not key.startswith(REF_LAYER):
            out[key] = tensor
            continue
        index, rest = key[len(REF_LAYER):].split(".", 1)
        base = f"{HF_LAYER}{index}."
        if rest.startswith("attn.qkv."):
            if tensor.shape[0] != 3 * hidden:
                raise CheckpointError(f"vision tensor '{key}' has shape {tuple(tensor.shape)}; "
                                      f"expected first dim 3*{hidden}")
            kind = rest.rsplit(".", 1)[-1]
            for name, chunk in zip(QKV, tensor.split(hidden, dim=0)):
                out[f"{base}attention.{name}.{kind}"] = chunk
            continue
        renamed = _rename_part(rest, LAYER_PARTS)
        out[base + renamed if renamed is not None else key] = tensor
    return out


def to_reference(state: dict[str, Any]) -> dict[str, Any]:
    """transformers names -> reference names, q/k/v fused back into ``attn.qkv``."""
    import torch

    top = {hf: ref for ref, hf in TOP_LEVEL.items()}
    parts = {hf: ref for ref, hf in LAYER_PARTS.items()}
    out: dict[str, Any] = {}
    qkv: dict[tuple[str, str], dict[str, Any]] = {}
    for key, tensor in state.items():
        if key in top:
            out[top[key]] = tensor
            continue
        match = re.match(rf"{re.escape(HF_LAYER)}(\d+)\.(.*)", key)
        if match is None:
            out[key] = tensor
            continue
        index, rest = match.groups()
        proj = re.match(r"attention\.(q_proj|k_proj|v_proj)\.(weight|bias)$", rest)
        if proj is not None:
            qkv.setdefault((index, proj.group(2)), {})[proj.group(1)] = tensor
            continue
        renamed = _rename_part(rest, parts)
        out[f"{REF_LAYER}{index}.{renamed if renamed is not None else rest}"] = tensor
    for (index, kind), pieces in qkv.items():
        out[f"{REF_LAYER}{index}.attn.qkv.{kind}"] = torch.cat([pieces[name] for name in QKV])
    return out
