"""Which files of a hub checkpoint a run needs, fetched through huggingface_hub; ``python -m vita_framework.fetch``.

A bundle is fetched in two steps at one commit: its small config files first (``config.json``, the shard index,
tokenizer and generation files), then what the configured components need: the shards holding tensors that no
unconfigured component claims (``+audio=none`` skips a shard of audio tensors), and the config files of the encoder
sub-directories (``mm_vision_tower``, ``mm_audio_encoder``). Pickles, training leftovers and the TTS decoder are
never fetched. A memory plan fetches the config files only.

```console
python -m vita_framework.fetch VITA-MLLM/VITA-1.5                # every safetensors shard + configs
python -m vita_framework.fetch VITA-MLLM/VITA-1.5@<rev> +vision=internvit audio=none   # what that run needs
python -m vita_framework.fetch VITA-MLLM/VITA-1.5 --config-only  # what `python -m vita_framework.memory` needs
python -m vita_framework.fetch Qwen/Qwen2.5-0.5B-Instruct --model   # a transformers model dir (llm.model=...)
```
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import HubError, VitaError
from .hub import HubRef, parse_hub_ref, snapshot
from .weights import INDEX_FILE, read_json

#: top-level files every bundle may have (exact names: fnmatch never reaches into sub-directories with them)
CONFIG_FILES = (
    "config.json", "generation_config.json", INDEX_FILE, "tokenizer.json", "tokenizer_config.json", "vocab.json",
    "merges.txt", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
    "tokenizer.model", "preprocessor_config.json", "bundle_info.json", "train.yaml", "global_cmvn",
)
#: config files of an encoder directory (the bundle's sub-directory, or a repository named by its config)
TOWER_FILES = ("config.json", "preprocessor_config.json", "train.yaml", "global_cmvn")
#: a standard transformers model directory (llm.model, vision.model, audio.model, vision.weights)
MODEL_FILES = (*CONFIG_FILES, "*.safetensors")
#: the bundle's config keys naming each encoder kind's directory
TOWER_KEYS = {"vision": "mm_vision_tower", "audio": "mm_audio_encoder"}


def bundle_patterns(config: dict[str, Any], index: dict[str, Any] | None, *, kinds: Iterable[str],
                    ignored: Sequence[str] = (), config_only: bool = False) -> tuple[list[str], list[str]]:
    """(allow_patterns, the shard files that must exist) for a bundle whose ``config.json`` and index are known."""
    patterns = list(CONFIG_FILES)
    kinds = set(kinds)
    for kind, key in TOWER_KEYS.items():
        value = config.get(key)
        if kind in kinds and isinstance(value, str) and value and ".." not in value and not value.startswith("/"):
            sub = value.strip("/").removeprefix("./")
            patterns += [f"{sub}/{name}" for name in TOWER_FILES]
    if config_only:
        return patterns, []
    if index is None:
        return [*patterns, "model*.safetensors"], []
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise HubError(f"'{INDEX_FILE}' has no 'weight_map' object")
    skip = tuple(ignored)
    shards = sorted({str(f) for key, f in weight_map.items() if not (skip and key.startswith(skip))})
    return patterns + shards, shards


def fetch_bundle(ref: HubRef, *, kinds: Iterable[str], ignored: Sequence[str] = (), config_only: bool = False,
                 what: str = "checkpoint") -> Path:
    """The snapshot directory of bundle ``ref`` with what ``kinds`` need (all at the commit the revision names)."""
    first = snapshot(ref, list(CONFIG_FILES), what=what)
    if config_only and not (first / "config.json").is_file():
        return first  # an encoder's repository (a whale directory has train.yaml and global_cmvn only)
    if not (first / "config.json").is_file():
        raise HubError(f"{what}={ref}: the repository has no config.json at revision '{ref.rev}'; it is not a VITA "
                       "bundle (a plain transformers model goes in llm.model=...)")
    config = read_json(first / "config.json")
    index = read_json(first / INDEX_FILE) if (first / INDEX_FILE).is_file() else None
    patterns, shards = bundle_patterns(config, index, kinds=kinds, ignored=ignored, config_only=config_only)
    path = snapshot(ref.at(first.name), patterns, what=what, shown=ref)  # first.name: the commit, never a moved branch
    missing = [name for name in shards if not (path / name).is_file()]
    if not config_only and index is None and not any(path.glob("model*.safetensors")):
        missing.append("model*.safetensors")
    if missing:
        raise HubError(f"{what}={ref}: the cached snapshot '{path}' lacks {', '.join(missing[:4])}; it is incomplete. "
                       f"Fetch it again with network access: {ref.commands()}")
    return path


def resolve_checkpoint(value: Any, *, kinds: Iterable[str], ignored: Sequence[str] = (),
                       config_only: bool = False) -> Path | None:
    """A local directory for ``checkpoint=value`` when it is a hub id (None when it is not one)."""
    ref = parse_hub_ref(value)
    if ref is None:
        return None
    return fetch_bundle(ref, kinds=kinds, ignored=ignored, config_only=config_only)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0].startswith("-"):
        asked = bool(args) and args[0] in ("-h", "--help")
        print(__doc__.strip() + "\n\nusage: python -m vita_framework.fetch REPO[@REVISION] [--config-only | --model] "
              "[overrides ...]", file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    ref = parse_hub_ref(args[0])
    if ref is None:
        print(f"error: '{args[0]}' is not a hub id (org/name or org/name@revision) or it is a local path",
              file=sys.stderr)
        return 2
    flags = {a for a in args[1:] if a.startswith("--")}
    overrides = [a for a in args[1:] if not a.startswith("--")]
    unknown = flags - {"--config-only", "--model"}
    if unknown:
        print(f"error: unknown option(s) {', '.join(sorted(unknown))}; use --config-only or --model", file=sys.stderr)
        return 2
    try:
        if "--model" in flags:
            path = snapshot(ref, list(MODEL_FILES), what="model", flag="--model")
        else:
            kinds, ignored = _needs(ref, overrides)
            path = fetch_bundle(ref, kinds=kinds, ignored=ignored, config_only="--config-only" in flags)
            _fetch_hub_towers(path, kinds)
    except VitaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _needs(ref: HubRef, overrides: list[str]) -> tuple[list[str], list[str]]:
    """Kinds and ignored prefixes: a run's (when overrides are given), else everything a bundle could feed."""
    if not overrides:
        return list(TOWER_KEYS), []
    from .builder import configured_kinds, weight_claims
    from .config import compose
    from .plugin_manager import get_plugins

    cfg = compose([*overrides, f"checkpoint={ref}"])
    plugins = get_plugins()
    kinds = configured_kinds(cfg, plugins.modalities)
    _, ignored = weight_claims(cfg, kinds, plugins.registry)
    return kinds, ignored


def _fetch_hub_towers(path: Path, kinds: Iterable[str]) -> None:
    """Encoder directories the bundle names by hub id (``OpenGVLab/InternViT-300M-448px``): their config files."""
    if not (path / "config.json").is_file():
        return
    config = read_json(path / "config.json")
    for kind, key in TOWER_KEYS.items():
        ref = parse_hub_ref(config.get(key), base=path) if kind in kinds else None
        if ref is not None:
            snapshot(ref, list(TOWER_FILES), what=f"{key} of {path}")


if __name__ == "__main__":
    sys.exit(main())
