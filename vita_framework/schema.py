"""Top-level run configuration: the keys a run accepts and their checks.

Hydra accepts ``+anything=value`` as a new key, so a typo such as ``+vison=internvit`` would silently do
nothing. ``validate_run_config`` rejects unknown top-level keys with a did-you-mean, and checks the values
whose mistakes would otherwise surface deep inside torch (dtype, device, input lists).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from .errors import ConfigError

COMPONENT_GROUPS = ("vision", "audio", "projector", "fusion", "llm")
RUN_KEYS = (
    "checkpoint", "template", "prompt", "images", "audios", "videos", "video_fps", "requests", "batch_size",
    "dtype", "device", "seed", "stream", "output", "generation", "experiment", "allow_pickle", "video", "eval",
)
ALLOWED_KEYS = frozenset(COMPONENT_GROUPS + RUN_KEYS)
DTYPES = ("auto", "float32", "bfloat16", "float16")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
OUTPUT_KEYS = frozenset({"scores"})
EVAL_KEYS = frozenset({"dataset", "metric", "max_items"})
VIDEO_KEYS = frozenset({"frames_per_second", "max_frames", "min_frames"})


def validate_run_config(cfg: Any) -> None:
    """Raise ConfigError for unknown top-level keys or invalid run values."""
    keys = [k for k in cfg if k != "hydra"]
    for key in keys:
        if key in ALLOWED_KEYS:
            continue
        close = difflib.get_close_matches(str(key), sorted(ALLOWED_KEYS), n=1, cutoff=0.6)
        value = cfg.get(key)
        if close and close[0] in (*COMPONENT_GROUPS, "experiment"):
            hint = f" Did you mean '+{close[0]}={value}'?"
        elif close:
            hint = f" Did you mean '{close[0]}={value}'?"
        else:
            hint = ""
        raise ConfigError(
            f"unknown config key '{key}'.{hint} Valid top-level keys: {', '.join(sorted(ALLOWED_KEYS))}"
        )
    dtype = cfg.get("dtype", "auto")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype} is not supported; use one of {', '.join(DTYPES)}")
    device = str(cfg.get("device", "auto"))
    if not _DEVICE.match(device):
        raise ConfigError(f"device={device} is not understood; use auto, cpu, cuda or cuda:N")
    for key in ("images", "audios", "videos"):
        value = cfg.get(key)
        if value is not None and not isinstance(value, str) and not _is_sequence(value):
            raise ConfigError(f"{key} must be a list of file paths, e.g. {key}=[a.png,b.png]; got {value!r}")
    output = cfg.get("output") or {}
    for key in output:
        if key not in OUTPUT_KEYS:
            raise ConfigError(f"unknown config key 'output.{key}'; valid: {', '.join(sorted(OUTPUT_KEYS))}")
    video = cfg.get("video") or {}
    for key in video:
        if key not in VIDEO_KEYS:
            raise ConfigError(f"unknown config key 'video.{key}'; valid: {', '.join(sorted(VIDEO_KEYS))}")
    if video and not (1 <= int(video.get("min_frames", 1)) <= int(video.get("max_frames", 1))):
        raise ConfigError("video.min_frames and video.max_frames must satisfy 1 <= min_frames <= max_frames")
    eval_cfg = cfg.get("eval") or {}
    for key in eval_cfg:
        if key not in EVAL_KEYS:
            raise ConfigError(f"unknown config key 'eval.{key}'; valid: {', '.join(sorted(EVAL_KEYS))}")
    if eval_cfg.get("metric", "exact") not in ("exact", "contains"):
        raise ConfigError(f"eval.metric={eval_cfg.get('metric')} is not supported; use exact or contains")
    batch_size = cfg.get("batch_size", 1)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}")
    for group in COMPONENT_GROUPS:
        node = cfg.get(group)
        if node is not None and (not hasattr(node, "keys") or "component" not in node):
            raise ConfigError(
                f"'{group}' must name a component (e.g. +{group}=<option> from conf/{group}/); got {node!r}"
            )


def as_path_list(value: Any) -> list[str]:
    """``images=a.png`` and ``images=[a.png]`` both give a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _is_sequence(value: Any) -> bool:
    return hasattr(value, "__iter__") and not hasattr(value, "keys")
