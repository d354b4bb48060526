"""Spreading the LLM over devices (``llm.device_map=auto``, accelerate), and each device's share of a plan.

The memory plan and the build compute the split with the same call (:func:`auto_device_map`, accelerate's
``infer_auto_device_map`` with ``llm.max_memory``), so the plan lists what the build will place on each device.
``max_memory`` keys are GPU indices, ``cpu`` and ``disk``; on a machine without GPUs a ``cpu``/``disk`` split runs
(the disk share is offloaded to a temporary directory and read back layer by layer: slow, but it runs).
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError


def parse_max_memory(value: Any) -> dict[Any, Any] | None:
    """``{0: 20GiB, 1: 20GiB, cpu: 64GiB}`` from the config: GPU indices as ints, sizes as accelerate reads them
    (``"20GiB"``, ``"500MB"`` or a number of bytes)."""
    if not value:
        return None
    if not hasattr(value, "items"):
        raise ConfigError(f"llm.max_memory must map devices to sizes, e.g. {{0: 20GiB, cpu: 64GiB}}; got {value!r}")
    out: dict[Any, Any] = {}
    for key, size in value.items():
        name = str(key)
        if not (name.isdigit() or name in ("cpu", "disk", "mps")):
            raise ConfigError(f"llm.max_memory: '{name}' is not a device; use GPU indices (0, 1, ...), cpu or disk")
        out[int(name) if name.isdigit() else name] = size
    return out


def auto_device_map(model: Any, max_memory: dict[Any, Any] | None) -> dict[str, Any]:
    """Module name -> device for ``model`` (real or on meta), never splitting a decoder layer."""
    import logging

    from accelerate import infer_auto_device_map

    no_split = list(getattr(model, "_no_split_modules", None) or [])
    accelerate_log = logging.getLogger("accelerate.utils.modeling")
    level = accelerate_log.level
    accelerate_log.setLevel(logging.ERROR)  # "device 0 is not available" when a plan names GPUs this host lacks
    try:
        return dict(infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split))
    finally:
        accelerate_log.setLevel(level)


def dispatch(model: Any, device_map: str, dtype: Any, max_memory: Any = None) -> Any:
    """Place ``model`` on ``device_map`` (``auto`` or one device) with accelerate."""
    try:
        from accelerate import dispatch_model
    except ImportError:
        raise ConfigError("llm.device_map needs the 'accelerate' package: pip install accelerate") from None
    model.to(dtype=dtype)
    if device_map != "auto":
        return dispatch_model(model, device_map={"": device_map})
    placed = auto_device_map(model, parse_max_memory(max_memory))
    offload = None
    if "disk" in placed.values():
        import tempfile

        offload = tempfile.mkdtemp(prefix="vita-offload-")
    return dispatch_model(model, device_map=placed, offload_dir=offload)


def bytes_per_device(device_map: dict[str, Any], tensor_bytes: dict[str, int]) -> dict[str, int]:
    """Sum of each tensor's (planned) bytes on the device its module was placed on."""
    prefixes = sorted(device_map, key=len, reverse=True)
    out: dict[str, int] = {}
    for name, size in tensor_bytes.items():
        owner = next((p for p in prefixes if p == "" or name == p or name.startswith(p + ".")), None)
        device = str(device_map[owner]) if owner is not None else "unplaced"
        out[device] = out.get(device, 0) + size
    return out
