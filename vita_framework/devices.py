"""dtype and device resolution shared by every component factory."""

from __future__ import annotations

from typing import Any

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; others unchanged (validated by the schema)."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        from .errors import ConfigError

        raise ConfigError(f"device={name} was asked for but CUDA is not available here; use device=cpu")
    return name


def resolve_dtype(name: str, device: str, checkpoint_dtype: str | None = None) -> str:
    """``auto`` -> float32 on CPU; on GPUs the checkpoint's dtype (bfloat16 when it does not say)."""
    if name != "auto":
        return name
    if not device.startswith("cuda"):
        return "float32"
    return _DTYPES.get(str(checkpoint_dtype or "bfloat16"), "bfloat16")


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)
