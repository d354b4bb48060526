"""Weight quantization as configuration: ``llm.quantization=int8|int4`` and the same option on the vision and audio
encoders (``vision.quantization``, ``audio.quantization``).

* ``int8``, ``int4``: torchao weight-only quantization, on CPU and CUDA. ``int8`` stores every Linear weight as
  int8 with one scale per output row (``Int8WeightOnlyConfig``) and the token embedding the same way
  (``IntxWeightOnlyConfig``, per row). ``int4`` packs two weights a byte with one scale and zero point per group of
  128 (or 64, 32: the largest that divides the layer's input width): on CPU through ``_weight_int4pack_mm_for_cpu``
  (torchao's ``Int4OpaqueTensor``: the output width must be a multiple of 16), on CUDA through the tinygemm kernel
  (bfloat16 only; widths padded to 8 x 1024). A layer whose shape the int4 kernel refuses (a 619-token lm_head),
  and the embedding, are quantized to int8 instead.
* ``bnb_int8``, ``bnb_nf4``: bitsandbytes ``Linear8bitLt`` / ``Linear4bit`` (NF4), CUDA only; lm_head stays in the
  run's dtype, as transformers does.

A weight shared by an embedding and a Linear (tied embeddings) is left alone. :func:`planned_bytes` gives, from a
module on the meta device, the bytes :func:`quantize` will leave (the memory plan), :func:`weight_bytes` measures them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
from typing import Any

from .errors import QuantizationError

TORCHAO_MODES = ("int8", "int4")
BNB_MODES = ("bnb_int8", "bnb_nf4")
MODES = (*TORCHAO_MODES, *BNB_MODES)
INT4_GROUPS = (128, 64, 32)


def check_mode(value: Any, key: str) -> None:
    """For an options schema's ``__post_init__``: the mode is one of :data:`MODES` or None."""
    if value is not None and value not in MODES:
        raise ValueError(f"{key}={value!r} is not a quantization mode; use int8 or int4 (torchao: CPU and CUDA), "
                         "bnb_int8 or bnb_nf4 (bitsandbytes: CUDA only), or null for none")


def mode_problems(mode: str | None, *, key: str, device: str, dtype: str) -> list[str]:
    """What keeps ``mode`` from running on ``device`` in ``dtype`` (cheap: no torch, no model)."""
    if mode is None:
        return []
    problems = []
    if mode in BNB_MODES and not device.startswith("cuda"):
        problems.append(f"{key}={mode} uses bitsandbytes, which runs on CUDA only, and the device is {device}; use "
                        f"{key}=int8 or {key}=int4 (torchao: CPU and CUDA), or device=cuda on a machine with a GPU")
    elif mode in BNB_MODES and importlib.util.find_spec("bitsandbytes") is None:
        problems.append(f"{key}={mode} needs bitsandbytes: pip install -e '.[bnb]' (or use {key}=int8 / int4)")
    if mode in TORCHAO_MODES and importlib.util.find_spec("torchao") is None:
        problems.append(f"{key}={mode} needs torchao: pip install -e '.[quantization]'")
    if mode == "int4" and device.startswith("cuda") and dtype != "bfloat16":
        problems.append(f"{key}=int4 on CUDA uses torchao's tinygemm kernel, which needs dtype=bfloat16 (the run's "
                        f"dtype is {dtype}); set dtype=bfloat16, or use {key}=int8")
    return problems


def scheme(module: Any, mode: str, device_type: str | None = None) -> dict[str, tuple]:
    """Module name -> how its weight is stored: ("int8",), ("int8_embedding",), ("int4", group), ("bnb",).
    ``device_type`` (the plan's, for a meta module) else each layer's own device decides the int4 shape rules."""
    from torch import nn

    embedded = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    linear = {id(m.weight) for m in module.modules() if isinstance(m, nn.Linear)}
    tied = embedded & linear
    plan: dict[str, tuple] = {}
    for name, child in module.named_modules():
        if isinstance(child, nn.Linear) and id(child.weight) not in tied:
            if mode in BNB_MODES:
                if name.rsplit(".", 1)[-1] != "lm_head":
                    plan[name] = ("bnb",)
            elif mode == "int4":
                group = _int4_group(child, device_type or child.weight.device.type)
                plan[name] = ("int4", group) if group else ("int8",)
            else:
                plan[name] = ("int8",)
        elif isinstance(child, nn.Embedding) and mode in TORCHAO_MODES and id(child.weight) not in tied:
            plan[name] = ("int8_embedding",)
    return plan


def _int4_group(layer: Any, device_type: str) -> int | None:
    if device_type == "cuda":
        return INT4_GROUPS[0]  # tinygemm pads the input width to a multiple of 1024
    if layer.out_features % 16:
        return None
    return next((g for g in INT4_GROUPS if layer.in_features % g == 0), None)


def _stored_bytes(entry: tuple, n: int, k: int, device_type: str, elem: int) -> int:
    """Bytes of one [n, k] weight stored as ``entry`` (torchao's and bitsandbytes' layouts)."""
    kind = entry[0]
    if kind == "int8":
        return n * k + n * 5  # int8 values, float32 scale and int8 zero point per row
    if kind == "int8_embedding":
        return n * k + n * (elem + 1)  # scale in the weight's dtype
    if kind == "int4":
        group = entry[1]
        if device_type == "cuda":
            n, k = math.ceil(n / 8) * 8, math.ceil(k / 1024) * 1024
            elem = 2
        return n * k // 2 + (k // group) * n * 2 * elem  # packed nibbles; scale and zero per group and row
    if kind == "bnb":
        return n * k + n * 4  # int8 + float32 row scales; NF4 is handled by the caller
    raise ValueError(entry)


def planned_bytes(module: Any, mode: str | None, device_type: str) -> int:
    """Bytes of ``module`` (on meta, in the run's dtype) once :func:`quantize` has run with ``mode``."""
    return sum(planned_tensor_bytes(module, mode, device_type).values())


def planned_tensor_bytes(module: Any, mode: str | None, device_type: str) -> dict[str, int]:
    """Each parameter's and buffer's bytes (first name of a shared tensor) once quantized with ``mode``."""
    plan = scheme(module, mode, device_type) if mode else {}
    weights = {id(module.get_submodule(name).weight): entry for name, entry in plan.items()}
    out: dict[str, int] = {}
    for name, tensor in _unique_tensors(module, named=True):
        entry = weights.get(id(tensor))
        if entry is None:
            out[name] = tensor.numel() * tensor.element_size()
        elif mode == "bnb_nf4":
            n, k = tensor.shape[0], tensor.shape[1]
            out[name] = n * k // 2 + math.ceil(n * k / 64) * 4
        else:
            out[name] = _stored_bytes(entry, tensor.shape[0], tensor.shape[1], device_type, tensor.element_size())
    return out


def weight_bytes(module: Any) -> int:
    """Bytes the module's parameters and buffers hold (quantized tensors: their packed parts)."""
    return sum(_tensor_bytes(t) for t in _unique_tensors(module))


def _unique_tensors(module: Any, *, named: bool = False) -> list[Any]:
    seen, out = set(), []
    for name, tensor in (*module.named_parameters(), *module.named_buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out.append((name, tensor) if named else tensor)
    return out


def _tensor_bytes(tensor: Any) -> int:
    if hasattr(tensor, "__tensor_flatten__") and type(tensor).__name__ not in ("Parameter", "Tensor"):
        names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(tensor, name)) for name in names)
    data = getattr(tensor, "data", tensor)
    if data is not tensor and hasattr(data, "__tensor_flatten__") and type(data).__name__ != "Tensor":
        return _tensor_bytes(data)
    return tensor.numel() * tensor.element_size()


def quantize(module: Any, mode: str | None, *, device: str, dtype: str, what: str) -> Any:
    """Quantize ``module``'s weights in place (on the device they are on); returns the module."""
    if mode is None:
        return module
    problems = mode_problems(mode, key=f"{what}.quantization", device=str(device), dtype=dtype)
    if problems:
        raise QuantizationError("; ".join(problems))
    plan = scheme(module, mode)
    offloaded = [name for name in plan if module.get_submodule(name).weight.device.type == "meta"]
    if offloaded:
        raise QuantizationError(f"{what}.quantization={mode} cannot quantize layers offloaded by device_map "
                                f"(e.g. {offloaded[0]}); give the devices room (llm.max_memory) or drop the offload")
    if mode in BNB_MODES:
        _bitsandbytes(module, plan, mode, str(device), dtype)
    else:
        _torchao(module, plan)
    return module


@contextlib.contextmanager
def _quiet_torchao():
    """torchao's import logs a torch._pytree deprecation warning on every run: not the user's concern."""
    logger = logging.getLogger("torch.utils._pytree")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _torchao(module: Any, plan: dict[str, tuple]) -> None:
    import torch

    with _quiet_torchao():
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
        from torchao.quantization.granularity import PerAxis

    groups: dict[tuple, set[str]] = {}
    for name, entry in plan.items():
        device_type = module.get_submodule(name).weight.device.type
        groups.setdefault((*entry, device_type) if entry[0] == "int4" else entry, set()).add(name)
    for key, names in groups.items():
        if key[0] == "int8":
            config = Int8WeightOnlyConfig(set_inductor_config=False)
        elif key[0] == "int8_embedding":
            config = IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
        elif key[2] == "cuda":
            config = Int4WeightOnlyConfig(group_size=key[1], int4_packing_format="tile_packed_to_4d",
                                          set_inductor_config=False)
        else:
            config = PrototypeInt4WeightOnlyConfig(group_size=key[1], set_inductor_config=False)
        with _quiet_torchao():
            quantize_(module, config, filter_fn=lambda _m, fqn, names=names: fqn in names)


def _bitsandbytes(module: Any, plan: dict[str, tuple], mode: str, device: str, dtype: str) -> None:
    """Replace each planned Linear by its bitsandbytes counterpart; bitsandbytes quantizes on the move to CUDA."""
    import bitsandbytes as bnb
    import torch
    from torch import nn

    for name in plan:
        parent_name, _, leaf = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        old = getattr(parent, leaf)
        weight = old.weight.data.to("cpu")
        if mode == "bnb_int8":
            new = bnb.nn.Linear8bitLt(old.in_features, old.out_features, bias=old.bias is not None,
                                      has_fp16_weights=False, threshold=6.0)
            new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(old.in_features, old.out_features, bias=old.bias is not None,
                                    compute_dtype=getattr(torch, dtype), quant_type="nf4")
            new.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
        if old.bias is not None:
            new.bias = nn.Parameter(old.bias.data.to("cpu"), requires_grad=False)
        setattr(parent, leaf, new.to(device))
