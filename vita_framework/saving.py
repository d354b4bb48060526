"""Writing a built pipeline's weights back as a bundle (the inverse of loading, component by component).

Each component hands its tensors over with ``checkpoint_state()`` in the names its own loader reads; they are
stored under the prefix the component claims, so ``checkpoint=<dir>`` with the same config loads them back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .weights import INDEX_FILE, PICKLE_FILES, SINGLE_FILE, WEIGHT_SUFFIXES, Bundle, default_bundle_path


def save_bundle(pipeline: Any, out_dir: str | os.PathLike, *, source: Bundle | str | os.PathLike | None = None,
                claims: dict[str, list[str]] | None = None) -> Path:
    """Write ``pipeline``'s weights as a bundle that ``checkpoint=<out_dir>`` with the same config loads back.

    ``model.safetensors`` holds the LLM's ``checkpoint_state()`` as is and every other component's under the
    (first) prefix it claims (``claims``: kind -> prefixes, default ``pipeline.claims``). ``config.json`` (its
    LLM keys taken from the built LLM), tokenizer files and the encoder sub-directories named in it (configs
    only) come from ``source`` (default: the embedded bundle); ``generation_config.json`` holds the LLM's
    generation defaults. Written to a temporary directory and renamed, so a half-written bundle never exists.
    """
    import shutil
    import tempfile

    from safetensors.torch import save_file

    src = source if isinstance(source, Bundle) else Bundle(source or default_bundle_path())
    out = Path(out_dir).expanduser()
    claims = claims if claims is not None else getattr(pipeline, "claims", None)
    if claims is None:
        raise CheckpointError("save_bundle needs each component's claimed prefixes: pass claims=... "
                              "(vita_framework.builder.weight_claims) or a pipeline that has .claims")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"'{out}' already exists and is not an empty directory; choose a new directory")
    parts = {"llm": pipeline.llm, **pipeline.encoders, "projector": pipeline.projector, "fusion": pipeline.fusion}
    tensors: dict[str, Any] = {}
    storages: set[int] = set()
    for kind, component in parts.items():
        state = component.checkpoint_state() if component is not None else {}
        prefix = "" if kind == "llm" else next(iter(claims.get(kind) or []), "")
        if state and kind != "llm" and not prefix:
            raise CheckpointError(f"{kind} has {len(state)} tensor(s) but claims no checkpoint prefix, so they "
                                  "cannot be saved; give it a weights_prefix option (or register it with claims)")
        for key, tensor in state.items():
            if prefix + key in tensors:
                raise CheckpointError(f"{kind} tensor '{prefix + key}' is also saved by another component")
            tensor = tensor.detach().to("cpu").contiguous()
            storage = tensor.untyped_storage().data_ptr()  # safetensors refuses shared storage (tied weights)
            tensors[prefix + key] = tensor.clone() if storage in storages else tensor
            storages.add(storage)
    config = dict(src.config)
    llm_model = getattr(pipeline.llm, "model", None)
    if getattr(llm_model, "config", None) is not None:
        from .causal_lm import LLM_CONFIG_KEYS

        config = {k: v for k, v in config.items() if k not in LLM_CONFIG_KEYS}  # all from the built LLM, e.g. its rope
        config.update({k: v for k, v in llm_model.config.to_dict().items() if k in LLM_CONFIG_KEYS and v is not None})
        config["torch_dtype"] = str(getattr(llm_model, "dtype", "float32")).removeprefix("torch.")
    defaults = getattr(pipeline.llm, "generation_defaults", None)  # None: the source's file is copied
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_file(tensors, str(staging / SINGLE_FILE), metadata={"format": "pt"})
        written = {"config.json": config, "generation_config.json": defaults, "bundle_info.json": {
            "weights": "saved from a built pipeline (vita_framework.saving.save_bundle)", "source": str(src.path)}}
        for name, data in written.items():
            if data:
                (staging / name).write_text(json.dumps(data, indent=2), encoding="utf-8")
        skip = {*(n for n, d in written.items() if d is not None), INDEX_FILE, *PICKLE_FILES}
        for file in src.path.iterdir():
            if file.is_file() and file.name not in skip and file.suffix not in WEIGHT_SUFFIXES:
                shutil.copy2(file, staging / file.name)
        for value in {v for v in src.config.values() if isinstance(v, str) and v and not Path(v).is_absolute()}:
            sub = src.path / value
            if sub.is_dir() and src.path.resolve() in sub.resolve().parents and not (staging / value).exists():
                shutil.copytree(sub, staging / value,
                                ignore=shutil.ignore_patterns(*(f"*{x}" for x in WEIGHT_SUFFIXES)))
        staging.chmod(0o755)  # mkdtemp made it private
        staging.replace(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
