"""The ``generation`` config group: transformers GenerationConfig fields plus a few keys of our own."""

from __future__ import annotations

import difflib
from typing import Any

from .errors import ComponentConfigError

#: generation keys that are ours, not GenerationConfig fields
OWN_GENERATION_KEYS = ("stop_tokens", "use_checkpoint_config")
SAMPLING_ONLY_KEYS = ("temperature", "top_p", "top_k", "min_p", "typical_p")


def validate_generation_options(options: dict[str, Any]) -> None:
    """Every key must be ours or a GenerationConfig field (checked before any model is built)."""
    from transformers import GenerationConfig

    probe = GenerationConfig()
    for key in options:
        if key not in OWN_GENERATION_KEYS and (key.startswith("_") or not hasattr(probe, key)):
            fields = [k for k in vars(probe) if not k.startswith("_")] + list(OWN_GENERATION_KEYS)
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" Did you mean 'generation.{close[0]}'?" if close else ""
            raise ComponentConfigError(
                f"unknown option 'generation.{key}': not a transformers GenerationConfig field "
                f"(nor one of {', '.join(OWN_GENERATION_KEYS)}).{hint}"
            )
    stop = options.get("stop_tokens")
    if stop is not None and (isinstance(stop, str) or not all(isinstance(t, str) for t in stop)):
        raise ComponentConfigError(f"generation.stop_tokens must be a list of token strings; got {stop!r}")


def merge_generation_options(checkpoint_defaults: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Our options over the checkpoint's generation_config.json; None keeps the checkpoint's value."""
    validate_generation_options(options)
    use_ckpt = options.get("use_checkpoint_config", True)
    merged = {k: v for k, v in checkpoint_defaults.items() if k != "transformers_version"} if use_ckpt else {}
    merged.update({k: v for k, v in options.items() if k not in OWN_GENERATION_KEYS and v is not None})
    if not merged.get("do_sample", False):  # greedy: sampling knobs have no effect, drop them (no warnings)
        for key in SAMPLING_ONLY_KEYS:
            merged.pop(key, None)
    return merged
