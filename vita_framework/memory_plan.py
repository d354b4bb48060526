"""The memory plan of a run, computed from configs alone (meta device), before anything is loaded.

Weights: each configured component built on meta (:mod:`vita_framework.planning`), its bytes in the run's dtype
and quantization (:func:`vita_framework.quantization.planned_tensor_bytes`, the layout :func:`quantize` leaves).
KV cache: ``2 x layers x kv_heads x head_dim x dtype`` bytes per token, at the run's context (the smaller of the
LLM's ``max_position_embeddings`` and the bundle's ``tokenizer_model_max_length``, as the pipeline enforces) for
each row of a batch. Activations: an estimate of the largest transient at prefill (one decoder layer over the whole
context, the last position's float32 logits, and the vision tower over the most tiles with eager attention
scores). With ``llm.device_map=auto`` the LLM's layers are split as the build will split them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

GIB = 1024 ** 3


@dataclass
class ComponentPlan:
    component: str
    params: int
    bytes: int
    quantization: str | None = None
    lazy: bool = False


@dataclass
class MemoryPlan:
    device: str
    dtype: str
    components: dict[str, ComponentPlan]
    kv_cache_bytes_per_token: int
    context_length: int
    max_position_embeddings: int | None
    batch_size: int
    activation_bytes: int
    budget_bytes: int | None = None
    budget_source: str = ""
    devices: dict[str, int] | None = None          # with llm.device_map=auto: planned bytes per device
    placement: dict[str, str] | None = None        # and the LLM's modules -> device, as the build places them
    device_limits: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        """Weights of every configured component (lazy ones included: they load on first use)."""
        return sum(c.bytes for c in self.components.values())

    @property
    def kv_cache_bytes(self) -> int:
        return self.kv_cache_bytes_per_token * self.context_length * self.batch_size

    @property
    def required_bytes(self) -> int:
        return self.total_bytes + self.kv_cache_bytes + self.activation_bytes

    @property
    def over_limit(self) -> dict[str, tuple[int, int]]:
        """Devices whose planned share exceeds their limit: name -> (planned, limit)."""
        return {d: (b, self.device_limits[d]) for d, b in (self.devices or {}).items()
                if d in self.device_limits and b > self.device_limits[d]}

    @property
    def fits(self) -> bool | None:
        """Every device within its limit (device_map) and the whole within the budget; None when nothing is known
        to compare with (no --budget-gb and the device's free memory cannot be read)."""
        verdicts = []
        if self.devices is not None and self.device_limits:
            verdicts.append(not self.over_limit)
        if self.budget_bytes is not None:
            verdicts.append(self.required_bytes <= self.budget_bytes)
        return all(verdicts) if verdicts else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device, "dtype": self.dtype,
            "components": {k: dataclasses.asdict(c) for k, c in self.components.items()},
            "total_bytes": self.total_bytes, "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token,
            "context_length": self.context_length, "batch_size": self.batch_size,
            "kv_cache_bytes": self.kv_cache_bytes, "max_position_embeddings": self.max_position_embeddings,
            "kv_cache_bytes_at_max_position": self.kv_cache_bytes_per_token * (self.max_position_embeddings or 0),
            "activation_bytes": self.activation_bytes, "required_bytes": self.required_bytes,
            "budget_bytes": self.budget_bytes, "budget_source": self.budget_source, "devices": self.devices,
            "llm_device_map": self.placement,
            "device_limits": self.device_limits or None, "fits": self.fits,
            "verdict": {True: "fits", False: "does not fit", None: "unknown (no budget)"}[self.fits],
        }


def plan_device(name: str) -> str:
    """The plan's device: ``auto`` is CUDA when present; a named device is taken as given (planning for a GPU this
    host lacks is allowed: give --budget-gb)."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def compute_plan(cfg: Any, *, budget_gb: float | None = None) -> MemoryPlan:
    """The plan of the composed run ``cfg`` (for a hub checkpoint, only its config files are fetched)."""
    from .builder import configured_kinds, open_checkpoint, weight_claims
    from .devices import resolve_dtype
    from .placement import auto_device_map, bytes_per_device, parse_max_memory
    from .planning import meta_components, module_of
    from .plugin_manager import get_plugins
    from .quantization import planned_tensor_bytes

    plugins = get_plugins()
    kinds = configured_kinds(cfg, plugins.modalities)
    _, ignored = weight_claims(cfg, kinds, plugins.registry)
    bundle = open_checkpoint(cfg.get("checkpoint"), kinds=kinds, ignored=ignored, config_only=True)
    device = plan_device(str(cfg.get("device", "auto")))
    ckpt_dtype = (bundle.config.get("torch_dtype") or bundle.config.get("dtype")) if bundle else None
    dtype = resolve_dtype(str(cfg.get("dtype", "auto")), device, ckpt_dtype)
    device_type = device.split(":")[0]
    built = meta_components(cfg, kinds, bundle, dtype)
    lazy = set(cfg.get("lazy") or [])
    components, llm_tensors = {}, {}
    for kind, (spec, options, component) in built.items():
        module = module_of(component)
        mode = getattr(options, "quantization", None)
        tensors = planned_tensor_bytes(module, mode, device_type) if module is not None else {}
        params = sum(p.numel() for p in dict.fromkeys(module.parameters())) if module is not None else 0
        components[kind] = ComponentPlan(spec.name, params, sum(tensors.values()), mode, kind in lazy)
        if kind == "llm":
            llm_tensors = tensors
    _, llm_options, llm = built["llm"]
    config = llm.model.config
    elem = _element_size(dtype)
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    kv_per_token = 2 * int(config.num_hidden_layers) * kv_heads * head_dim * elem
    limits = [llm.context_length, bundle.config.get("tokenizer_model_max_length") if bundle else None]
    limits = [int(v) for v in limits if isinstance(v, int) and v > 0]
    context = min(limits) if limits else 4096
    batch = int(cfg.get("batch_size", 1)) if cfg.get("requests") or (cfg.get("eval") or {}).get("dataset") else 1
    plan = MemoryPlan(device=device, dtype=dtype, components=components, kv_cache_bytes_per_token=kv_per_token,
                      context_length=context, max_position_embeddings=llm.context_length, batch_size=batch,
                      activation_bytes=_activations(config, built, context, batch, elem))
    if getattr(llm_options, "device_map", None) == "auto":
        max_memory = parse_max_memory(getattr(llm_options, "max_memory", None))
        placed = auto_device_map(llm.model, max_memory)
        shares = bytes_per_device({k: _device_name(v) for k, v in placed.items()}, llm_tensors)
        main = _device_name(placed.get("model.embed_tokens", next(iter(placed.values()), device)))
        others = plan.total_bytes - sum(llm_tensors.values()) + plan.kv_cache_bytes + plan.activation_bytes
        shares[main] = shares.get(main, 0) + others
        plan.devices = shares  # llm.max_memory steers the split; the limits are the devices' free memory
        plan.placement = {k: _device_name(v) for k, v in placed.items()}
    _set_budget(plan, cfg, budget_gb)
    return plan


def _set_budget(plan: MemoryPlan, cfg: Any, budget_gb: float | None) -> None:
    explicit = budget_gb if budget_gb is not None else cfg.get("memory_budget_gb")
    if explicit is not None:
        plan.budget_bytes = int(float(explicit) * GIB)
        plan.budget_source = "--budget-gb" if budget_gb is not None else "memory_budget_gb"
        return
    if plan.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return
        if plan.devices is not None:
            free = {f"cuda:{i}": torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())}
            plan.device_limits = {**free, **plan.device_limits}
            plan.budget_bytes = sum(free.values())
        else:
            index = int(plan.device.split(":")[1]) if ":" in plan.device else torch.cuda.current_device()
            plan.budget_bytes = torch.cuda.mem_get_info(index)[0]
        plan.budget_source = f"free memory of {plan.device}"
        return
    available = _mem_available()
    if available is not None:
        plan.budget_bytes, plan.budget_source = available, "free host memory (MemAvailable)"


def _activations(config: Any, built: dict[str, Any], context: int, batch: int, elem: int) -> int:
    """An estimate of the largest transient tensors at prefill (see the module docstring)."""
    hidden = int(config.hidden_size)
    inter = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    total = batch * context * (4 * hidden + 3 * inter) * elem + batch * int(config.vocab_size) * 4
    for kind, (_, options, component) in built.items():
        tower = getattr(getattr(component, "model", None), "config", None)
        if kind == "llm" or tower is None or not hasattr(tower, "image_size"):
            continue
        size, patch = (_first(getattr(tower, k)) for k in ("image_size", "patch_size"))
        tokens = (size // patch) ** 2 + 1
        tiles = int(getattr(component, "max_tiles", None) or getattr(options, "max_tiles", None) or 1)
        tiles += 1 if tiles > 1 else 0  # the thumbnail
        width, heads = int(tower.hidden_size), int(tower.num_attention_heads)
        total += tiles * tokens * (4 * width + int(tower.intermediate_size)) * elem
        total += tiles * heads * tokens * tokens * elem
    return total


def _first(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _element_size(dtype: str) -> int:
    return {"float32": 4, "bfloat16": 2, "float16": 2}.get(dtype, 4)


def _device_name(device: Any) -> str:
    """accelerate's names (0, 1, "cpu", "disk") as torch's ("cuda:0", "cpu", "disk")."""
    return f"cuda:{device}" if isinstance(device, int) or str(device).isdigit() else str(device)


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
