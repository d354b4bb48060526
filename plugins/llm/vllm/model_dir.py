"""The directory vLLM loads for ``llm=vllm``, prepared from a VITA bundle without copying its weights.

vLLM reads a transformers-style model directory: ``config.json`` and safetensors files. The bundle already
has safetensors files; what differs is the config (VITA's ``vita-Qwen2`` with encoder keys), the tensors of
the other components in the same files, and embedding rows beyond the tokenizer. So the prepared directory
holds:

- ``config.json``: the bundle's LLM keys (``vita_framework.causal_lm.LLM_CONFIG_KEYS``), ``model_type`` and
  ``architectures`` of vLLM's model class (``VitaQwen2ForCausalLM``, :mod:`.vllm_model`), ``vocab_size`` set to
  the tokenizer's length (as the reference resizes the LLM), the dtype, and ``vita_exclude_prefixes``: the
  prefixes the encoders and projector claim (the LLM takes the rest, as in the transformers backend);
- symbolic links to the bundle's safetensors files (and their index): nothing is copied;
- ``vita_source.json``: what it was prepared from.

It lives under ``<cache>/vllm-models/<hash>`` (``$VITA_CACHE_DIR``, else ``$XDG_CACHE_HOME/vita_framework``,
else ``~/.cache/vita_framework``), keyed by the bundle's path, its weight files' sizes and times, the
exclusions, the vocabulary and the architecture, so a second run reuses it and a changed bundle gets a new
one. Written to a temporary directory and renamed: concurrent runs never see half a directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from vita_framework.errors import CheckpointError

#: transformers ``model_type`` and the vLLM architecture (see :mod:`.vllm_model`) per ``llm.arch``
ARCHS = {"Qwen2": ("qwen2", "VitaQwen2ForCausalLM"), "Llama": ("llama", "VitaLlamaForCausalLM")}
INDEX = "model.safetensors.index.json"


def cache_root() -> Path:
    if os.environ.get("VITA_CACHE_DIR"):
        return Path(os.environ["VITA_CACHE_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vita_framework"


def weight_files(bundle_path: Path) -> list[Path]:
    """The bundle's safetensors files (and index); pickle-only bundles are refused with the way out."""
    files = sorted(bundle_path.glob("model*.safetensors"))
    if not files:
        raise CheckpointError(
            f"llm=vllm reads safetensors weights, and '{bundle_path}' has none (model.safetensors or "
            "model-*.safetensors). Convert the bundle (load it with the transformers backend, llm=qwen2, and "
            "save it with vita_framework.saving.save_bundle), or use llm=qwen2")
    if (bundle_path / INDEX).is_file():
        files.append(bundle_path / INDEX)
    return files


def model_config(bundle_config: dict[str, Any], *, arch: str, vocab_size: int, dtype: str,
                 exclude_prefixes: list[str]) -> dict[str, Any]:
    """config.json for vLLM from the bundle's config (only the LLM's keys carry over)."""
    from vita_framework.causal_lm import LLM_CONFIG_KEYS

    if arch not in ARCHS:
        raise CheckpointError(f"llm.arch={arch!r}: llm=vllm knows {', '.join(ARCHS)}")
    model_type, architecture = ARCHS[arch]
    config = {k: v for k, v in bundle_config.items() if k in LLM_CONFIG_KEYS and v is not None}
    bundle_vocab = config.get("vocab_size")
    if isinstance(bundle_vocab, int) and bundle_vocab < vocab_size:
        raise CheckpointError(f"the bundle's config.json has vocab_size {bundle_vocab} but the tokenizer has "
                              f"{vocab_size} tokens; the tokenizer does not belong to this checkpoint")
    config.update({
        "architectures": [architecture], "model_type": model_type, "vocab_size": vocab_size,
        "torch_dtype": dtype, "dtype": dtype, "vita_exclude_prefixes": sorted(set(exclude_prefixes)),
    })
    return config


def prepare_model_dir(bundle_path: Path, bundle_config: dict[str, Any], *, arch: str, vocab_size: int, dtype: str,
                      exclude_prefixes: list[str], root: Path | None = None) -> Path:
    """The prepared directory for this bundle (made once, then reused)."""
    bundle_path = Path(bundle_path).resolve()
    files = weight_files(bundle_path)
    config = model_config(bundle_config, arch=arch, vocab_size=vocab_size, dtype=dtype,
                          exclude_prefixes=exclude_prefixes)
    source = {"bundle": str(bundle_path), "files": {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files},
              "config": config}
    key = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:24]
    root = Path(root) if root is not None else cache_root() / "vllm-models"
    target = root / key
    if (target / "vita_source.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        for file in files:
            (staging / file.name).symlink_to(file)
        (staging / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        (staging / "vita_source.json").write_text(json.dumps(source, indent=2), encoding="utf-8")
        staging.chmod(0o755)
        try:
            staging.replace(target)
        except OSError:  # another process prepared it first
            if not (target / "vita_source.json").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
