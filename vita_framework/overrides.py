"""Command-line overrides before Hydra sees them: generation fields made addable, mistakes made readable.

Hydra refuses ``generation.top_k=5`` when the chosen generation YAML lacks ``top_k`` ("not in struct"), although
every transformers ``GenerationConfig`` field is valid there; ``generation.<key>=`` is rewritten to
``++generation.<key>=`` (add or override), and the key is checked by name and value before any model work
(:mod:`vita_framework.validation`). A composition mistake (``+vision=internvitt``, ``vision.max_tile=3``,
``vision=internvit`` without ``+``) is turned into the framework's ``error:`` line, with a did-you-mean, instead
of Hydra's report.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

_GENERATION = re.compile(r"^generation\.[A-Za-z_]\w*=")
_FLAGS_WITHOUT_RUN = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion",
                      "-sc", "--version")


def normalise(args: Sequence[str]) -> list[str]:
    """``generation.<key>=v`` -> ``++generation.<key>=v``; everything else unchanged."""
    return [f"++{a}" if _GENERATION.match(a) else a for a in args]


def precheck(args: Sequence[str], compose: Any) -> str | None:
    """Compose the run's overrides once (``compose(overrides)``); a Hydra mistake becomes a readable message.

    Returns None when composition works (or cannot be checked, e.g. a sweep that is not a simple list).
    """
    if any(a in _FLAGS_WITHOUT_RUN or a.startswith(("--cfg", "--info", "-c=")) for a in args):
        return None
    overrides = [a for a in args if not a.startswith("-")]
    multirun = any(a in ("-m", "--multirun") for a in args)
    overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    if multirun:
        overrides = _first_values(overrides)
        if overrides is None:
            return None
    try:
        compose(overrides)
    except Exception as exc:  # Hydra's own exceptions; anything else is reported by the job itself
        if type(exc).__module__.split(".")[0] != "hydra":
            return None
        return explain(exc, overrides, compose)
    return None


def explain(exc: Exception, overrides: list[str], compose: Any) -> str:
    text = str(exc)
    missing = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if missing:
        group, option = missing.groups()
        available = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], flags=re.MULTILINE)
        typed = next((o.split("=", 1)[0] for o in overrides if o.lstrip("+~").split("=", 1)[0] == group), group)
        return f"config group '{group}' has no option '{option}'.{_did_you_mean(option, available, typed + '=')} " \
               f"Available: {', '.join(available) or 'none'}"
    no_match = re.search(r"Could not override '([^'.]+)'\. No match in the defaults list", text)
    if no_match:
        group = no_match.group(1)
        value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == group), "<option>")
        return (f"'{group}={value}' switches a component that is not configured yet; append it with "
                f"'+{group}={value}'")
    bad_key = re.search(r"Could not override '([\w.]+)'", text)
    if bad_key:
        return _unknown_key(bad_key.group(1), overrides, compose)
    hint = " (quote a value holding '=', spaces or brackets: prompt='a=b')" if "mismatched input" in text else ""
    return f"the command line could not be parsed: {text.splitlines()[0]}{hint}"


def _unknown_key(key: str, overrides: list[str], compose: Any) -> str:
    """``vision.max_tile=3``: the valid keys of that node, read from the config composed without it."""
    from .plugin_manager import get_plugins

    table = get_plugins().modalities
    modality = table.request_keys().get(key) or table.request_options().get(key)
    if modality is not None:
        package = next(e.package for e in table.entries() if e.modality is modality)
        return (f"'{key}' belongs to modality '{modality.name}' ({package}), whose {modality.encoder} encoder is not "
                f"configured: add +{modality.encoder}=<option> (its YAML declares '{key}'), or write +{key}=...")
    parent, _, name = key.rpartition(".")
    others = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
    valid: list[str] = []
    try:
        node = compose(others)
        for part in parent.split(".") if parent else []:
            node = node[part]
        valid = sorted(str(k) for k in node)
    except Exception:
        pass
    hint = _did_you_mean(name, valid, f"{parent}." if parent else "")
    listing = f" Valid keys: {', '.join(valid)}" if valid else ""
    return f"unknown config key '{key}'.{hint}{listing}"


def _did_you_mean(word: str, choices: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" Did you mean '{prefix}{close[0]}'?" if close else ""


def _first_values(overrides: list[str]) -> list[str] | None:
    """A multirun's overrides with each simple sweep (``a,b,c``) replaced by its first value."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.core.override_parser.types import ChoiceSweep

        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return None
    out = []
    for raw, override in zip(overrides, parsed):
        if not override.is_sweep_override():
            out.append(raw)
        elif isinstance(override.value(), ChoiceSweep) and override.value().list:
            key, first = raw.split("=", 1)[0], override.value().list[0]
            out.append(f"{key}={first}")
        else:
            return None
    return out
