"""Top-level run configuration: the keys a run accepts and their checks.

Hydra accepts ``+anything=value`` as a new key, so a typo such as ``+vison=internvit`` would silently do
nothing. ``validate_run_config`` rejects unknown top-level keys with a did-you-mean, and checks the values
whose mistakes would otherwise surface deep inside torch (dtype, device, input lists). The modality keys
(``images``, ``video``, ``vision``, a plugin's own) come from the modality table.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from .errors import ConfigError

CORE_GROUPS = ("projector", "fusion", "llm")
RUN_KEYS = (
    "checkpoint", "template", "prompt", "requests", "batch_size", "dtype", "device", "seed", "stream", "output",
    "generation", "experiment", "allow_pickle", "eval", "lazy", "memory_budget_gb", "serve", "demo",
    "encoder_cache_mb", "prefix_cache_mb",
)
DTYPES = ("auto", "float32", "bfloat16", "float16")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
OUTPUT_KEYS = frozenset({"scores"})
EVAL_KEYS = frozenset({"dataset", "metric", "max_items"})


def component_groups() -> tuple[str, ...]:
    """Config groups naming a component: every encoder kind of the modality table, then the core kinds."""
    from .plugin_manager import get_modalities

    return (*get_modalities().encoder_kinds(), *CORE_GROUPS)


def allowed_keys() -> frozenset[str]:
    from .plugin_manager import get_modalities

    table = get_modalities()
    return frozenset((*component_groups(), *RUN_KEYS, *table.request_keys(), *table.request_options(),
                      *table.options_keys()))


def validate_run_config(cfg: Any) -> None:
    """Raise ConfigError (every problem listed) for unknown top-level keys or invalid run values."""
    from .errors import ValidationErrors

    problems = run_config_problems(cfg)
    if problems:
        raise ValidationErrors(problems)


def run_config_problems(cfg: Any) -> list[str]:
    """Every problem of the top-level keys and run values, without stopping at the first."""
    from .plugin_manager import get_modalities

    table = get_modalities()
    groups = component_groups()
    allowed = allowed_keys()
    problems: list[str] = []
    for key in (k for k in cfg if k != "hydra"):
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
        value = cfg.get(key)
        if close and close[0] in (*groups, "experiment"):
            hint = f" Did you mean '+{close[0]}={value}'?"
        elif close:
            hint = f" Did you mean '{close[0]}={value}'?"
        else:
            hint = ""
        problems.append(f"unknown config key '{key}'.{hint} Valid top-level keys: {', '.join(sorted(allowed))}")
    dtype = cfg.get("dtype", "auto")
    if dtype not in DTYPES:
        problems.append(f"dtype={dtype} is not supported; use one of {', '.join(DTYPES)}")
    device = str(cfg.get("device", "auto"))
    if not _DEVICE.match(device):
        problems.append(f"device={device} is not understood; use auto, cpu, cuda or cuda:N")
    for key in table.request_keys():
        value = cfg.get(key)
        if value is not None and not isinstance(value, str) and not _is_sequence(value):
            problems.append(f"{key} must be a list of file paths, e.g. {key}=[a.png,b.png]; got {value!r}")
    problems += [f"unknown config key 'output.{key}'; valid: {', '.join(sorted(OUTPUT_KEYS))}"
                 for key in (cfg.get("output") or {}) if key not in OUTPUT_KEYS]
    for key, modality in table.options_keys().items():
        node = cfg.get(key)
        if node is not None and not hasattr(node, "keys"):
            problems.append(f"'{key}' is the {modality.name} modality's option group, set as {key}.<option>=...; "
                            f"got {node!r} (the inputs go in {modality.request_key}=[...])")
            continue
        try:
            validate_modality_options(node, key, modality.options_schema)
        except ConfigError as exc:
            problems.append(str(exc))
    eval_cfg = cfg.get("eval") or {}
    problems += [f"unknown config key 'eval.{key}'; valid: {', '.join(sorted(EVAL_KEYS))}"
                 for key in eval_cfg if key not in EVAL_KEYS]
    if eval_cfg.get("metric", "exact") not in ("exact", "contains"):
        problems.append(f"eval.metric={eval_cfg.get('metric')} is not supported; use exact or contains")
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not -2**63 <= seed < 2**64):
        problems.append(f"seed must be an integer (or null for fresh randomness); got {seed!r}")
    batch_size = cfg.get("batch_size", 1)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        problems.append(f"batch_size must be a positive integer; got {batch_size!r}")
    for key in ("encoder_cache_mb", "prefix_cache_mb"):
        value = cfg.get(key) or 0
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            problems.append(f"{key} must be a number of MB >= 0 (0: off); got {value!r}")
    lazy = cfg.get("lazy") or []
    projected = {m.encoder for m in table if m.projected}
    for kind in lazy if _is_sequence(lazy) else [lazy]:
        if kind not in table.encoder_kinds() or kind in projected:
            allowed = sorted(set(table.encoder_kinds()) - projected)
            problems.append(f"lazy: '{kind}' cannot be built lazily; only encoders no other component is derived "
                            f"from can: {', '.join(allowed)}")
    for group in groups:
        node = cfg.get(group)
        if node is not None and (not hasattr(node, "keys") or "component" not in node):
            problems.append(f"'{group}' must name a component (e.g. +{group}=<option> from conf/{group}/); "
                            f"got {node!r}")
    return problems


def validate_modality_options(node: Any, key: str, schema: type | None) -> Any:
    """A modality's option node (``video``) against its schema: unknown keys and wrong types, with the key."""
    if node is None or schema is None:
        return node
    import dataclasses

    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    fields = sorted(f.name for f in dataclasses.fields(schema))
    for name in node:
        if name not in fields:
            close = difflib.get_close_matches(str(name), fields, n=1)
            hint = f" Did you mean '{key}.{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{key}.{name}'.{hint} Valid: {', '.join(fields)}")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid value for '{key}.{getattr(exc, 'full_key', '')}': {exc.msg}") from None
    except ValueError as exc:  # the schema's own cross-field check (__post_init__)
        raise ConfigError(f"invalid '{key}': {exc}") from None


def as_path_list(value: Any) -> list[str]:
    """``images=a.png`` and ``images=[a.png]`` both give a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _is_sequence(value: Any) -> bool:
    return hasattr(value, "__iter__") and not hasattr(value, "keys")
