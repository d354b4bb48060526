"""Validate a whole run before anything is loaded, and report every problem at once.

A run can be wrong in several places at the same time (``+llm.tokenizer=/nonexistent vision.max_tiles=abc``).
Finding them one per attempt, each after seconds of model loading, is what this module prevents: it checks the
top-level keys, every configured component's options against its plugin's schema (including the schema's own
checks), every generation field (by name and by value), the checkpoint's presence and the request's inputs,
collects all problems, and raises one :class:`~vita_framework.errors.ValidationErrors`. Nothing here reads a
weight or builds a model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .errors import UnknownComponentError, ValidationErrors, VitaError

#: own checks on top of transformers' (it accepts e.g. top_p=2.0)
_RANGES = {
    "max_new_tokens": (1, None, int), "min_new_tokens": (0, None, int), "max_length": (1, None, int),
    "num_beams": (1, None, int), "top_k": (0, None, int), "top_p": (0.0, 1.0, float),
    "temperature": (0.0, None, float), "repetition_penalty": (0.0, None, float), "min_p": (0.0, 1.0, float),
    "typical_p": (0.0, 1.0, float),
}
_EXCLUSIVE_LOW = {"top_p", "temperature", "repetition_penalty", "typical_p"}


def validate_run(cfg: Any, *, request_inputs: bool = True) -> None:
    """Raise :class:`ValidationErrors` listing every problem of ``cfg`` (a composed run config)."""
    problems = run_problems(cfg, request_inputs=request_inputs)
    if problems:
        raise ValidationErrors(problems)


def run_problems(cfg: Any, *, request_inputs: bool = True) -> list[str]:
    from .schema import run_config_problems

    problems = run_config_problems(cfg)
    problems += component_problems(cfg)
    problems += generation_problems(_plain(cfg.get("generation")) or {})
    problems += checkpoint_problems(cfg)
    from .memory import resource_problems

    problems += resource_problems(cfg)  # quantization modes the device supports, memory_budget_gb
    if request_inputs:
        problems += request_problems(cfg)
    return problems


def component_problems(cfg: Any) -> list[str]:
    """Every configured component's options against its registered schema (unknown name, key, type, value)."""
    from .plugin_manager import get_plugins
    from .schema import component_groups

    registry = get_plugins().registry
    problems = []
    for kind in component_groups():
        node = cfg.get(kind)
        if node is None or not hasattr(node, "keys") or "component" not in node:
            continue  # absent, or already reported by run_config_problems
        try:
            registry.options(kind, node)
        except UnknownComponentError as exc:
            problems.append(attribute_unknown(kind, exc))
        except VitaError as exc:
            problems.append(str(exc))
    return problems


def attribute_unknown(kind: str, exc: Exception) -> str:
    """An unknown component's message, traced to the config option (and the package shipping it) that named it."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choice = HydraConfig.get().runtime.choices.get(kind)
    except ValueError:  # not under a Hydra app
        choice = None
    if choice is None:
        return str(exc)
    from .searchpath import option_origin

    dist = option_origin(kind, choice)
    where = f"config option '{kind}={choice}'" + (f" from package '{dist}'" if dist else "")
    return f"{kind}.component in {where}: {exc}"


def generation_problems(options: dict[str, Any]) -> list[str]:
    """Names (GenerationConfig fields or ours) and values, checked as transformers would, strictly."""
    from .generation import OWN_GENERATION_KEYS, SAMPLING_ONLY_KEYS, validate_generation_options

    problems = []
    try:
        validate_generation_options(options)
    except VitaError as exc:
        problems.append(str(exc))
        return problems
    for key, (low, high, kind) in _RANGES.items():
        value = options.get(key)
        if value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (kind is int and not float(value).is_integer()) or not math.isfinite(value):
            problems.append(f"generation.{key} must be a{'n integer' if kind is int else ' number'}; got {value!r}")
            continue
        exclusive = key in _EXCLUSIVE_LOW
        if (value <= low if exclusive else value < low) or (high is not None and value > high):
            upper = f" and <= {high}" if high is not None else ""
            problems.append(f"generation.{key} must be {'>' if exclusive else '>='} {low}{upper}; got {value!r}")
    if problems:
        return problems
    fields = {k: v for k, v in options.items() if k not in OWN_GENERATION_KEYS and v is not None}
    if not fields.get("do_sample", False):
        for key in SAMPLING_ONLY_KEYS:
            fields.pop(key, None)
    try:
        from transformers import GenerationConfig

        GenerationConfig(**fields).validate(strict=True)
    except (ValueError, TypeError) as exc:
        problems.append(f"generation: {str(exc).strip()}")
    return problems


def checkpoint_problems(cfg: Any) -> list[str]:
    """The checkpoint directory exists and has a config.json (no tensor is opened). A hub id (``org/name[@rev]``)
    is accepted without touching the network; offline, its config.json must be in the local cache."""
    value = cfg.get("checkpoint")
    if value is None or str(value).lower() in {"null", "none", "random", "default"}:
        return []
    path = Path(str(value)).expanduser()
    from .hub import cache_problem, parse_hub_ref

    ref = parse_hub_ref(value)
    if ref is not None:
        problem = cache_problem(ref, what="checkpoint")
        return [problem] if problem else []
    if not path.is_dir():
        return [f"checkpoint directory '{path}' does not exist; pass checkpoint=<dir with config.json and "
                "model*.safetensors>, or checkpoint=default for the embedded bundle"]
    if not (path / "config.json").is_file():
        return [f"checkpoint '{path}' has no config.json; is it a VITA bundle directory?"]
    return []


def request_problems(cfg: Any) -> list[str]:
    """The CLI request's prompt, files (every modality's request key, with the header checks its options schema
    offers as ``check``) and request options (``video_fps``), and the batch / eval files."""
    from .plugin_manager import get_modalities
    from .requests_io import option_problem, text_problem
    from .schema import as_path_list

    problems = []
    prompt = cfg.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        problems.append(f"prompt must be text; got {prompt!r} (quote it: prompt='...')")
    elif prompt is not None and (problem := text_problem("prompt", prompt)):
        problems.append(problem)
    table = get_modalities()
    bad_options = set()
    for key, modality in table.request_options().items():
        value = cfg.get(key)
        problem = None if value is None else option_problem(modality, key, value)
        if problem:
            problems.append(f"{problem} (set {key}=<number>)")
            bad_options.add(modality.name)
    for key, modality in table.request_keys().items():
        value = cfg.get(key)
        if value and cfg.get(modality.encoder) is None:
            problems.append(f"{key} were given but no {modality.encoder} encoder is configured; add "
                            f"+{modality.encoder}=<option> (`python -m vita_framework.plugins` lists them)")
        if value is None or (not isinstance(value, str) and not hasattr(value, "__iter__")):
            continue
        items = as_path_list(value)
        missing = [item for item in items if not Path(item).expanduser().exists()]
        problems += [f"{key}: file '{item}' does not exist" for item in missing]
        if items and not missing and modality.name not in bad_options:
            problems += _input_problems(cfg, modality, items)
    if cfg.get("requests"):  # parsed (not loaded) now, so a bad line is reported with the rest
        from .requests_io import read_requests

        problems += _problem_of(read_requests, cfg.requests)
    dataset = (cfg.get("eval") or {}).get("dataset")
    if dataset:
        from .evaluation import read_dataset

        problems += _problem_of(read_dataset, dataset)
    return problems


def _input_problems(cfg: Any, modality: Any, items: list[str]) -> list[str]:
    """The modality's own cheap checks (``modality.check(path, options)``: image sizes, frame rates), with its
    option node and request options; skipped while the option node itself is invalid (reported)."""
    check = modality.check
    if check is None:
        return []
    import dataclasses

    from .schema import validate_modality_options

    try:
        node = validate_modality_options(cfg.get(modality.options_key), modality.options_key, modality.options_schema)
    except VitaError:
        return []
    options = dataclasses.asdict(node) if dataclasses.is_dataclass(node) else dict(_plain(node) or {})
    options.update({k: cfg.get(k) for k in modality.request_options if cfg.get(k) is not None})
    problems = []
    for item in items:
        try:
            check(item, options)
        except VitaError as exc:
            problems.append(str(exc))
    return problems


def _problem_of(read: Any, path: Any) -> list[str]:
    try:
        read(path)
    except VitaError as exc:
        return [str(exc)]
    return []


def _plain(node: Any) -> Any:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
