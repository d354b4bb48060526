"""Components on the meta device, from configs alone: what the memory plan measures (imports torch).

Each configured component is built by its own factory along its random-init path (no checkpoint) under
``torch.device("meta")``: parameters have shapes and dtypes but no storage, and no weight is read. For a checkpoint,
the built-in components first take their architecture from the checkpoint's configs, as their loaders would:
``config.json`` for the LLM, the ``mm_vision_tower`` directory for InternViT, whale's ``train.yaml``, a model
directory's ``config.json`` for ``llm.model`` / ``vision.model`` / ``audio.model`` (a hub id: config files only).
A third-party component is planned from its own options (its random-init architecture). Quantization and
``device_map`` are left to the plan: factories never quantize or dispatch a meta module.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

from .weights import Bundle, read_json, resolve_local_dir

#: config.json keys of a Qwen2 LLM that its ``arch`` options take
_QWEN2_ARCH = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "rope_theta", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings")


#: LLM components whose memory the plan knows (a transformers model it can build on meta); others, such as
#: llm=vllm with its own engine and KV-cache pool, plan their own memory
PLANNED_LLMS = ("qwen2", "hf_causal_lm")


def plannable(cfg: Any) -> str | None:
    """Why ``cfg`` cannot be planned (None when it can)."""
    node = cfg.get("llm")
    name = node.get("component") if hasattr(node, "get") else None
    if name not in PLANNED_LLMS:
        return (f"the memory plan covers llm={' or llm='.join(PLANNED_LLMS)}; llm={name} manages its own memory "
                "(see its options)")
    return None


def meta_components(cfg: Any, kinds: list[str], bundle: Bundle | None, dtype: str) -> dict[str, tuple[Any, Any, Any]]:
    """kind -> (spec, the run's options, the component built on meta), in build order."""
    import torch
    from omegaconf import OmegaConf

    from .errors import MemoryPlanError
    from .plugin_manager import get_plugins
    from .registry import BuildContext

    reason = plannable(cfg)
    if reason:
        raise MemoryPlanError(reason)
    registry = get_plugins().registry
    context = BuildContext(checkpoint=None, dtype=dtype, device="meta")
    built: dict[str, tuple[Any, Any, Any]] = {}
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "RANDOM weights": the plan never runs them
        for kind in kinds:
            spec, options = registry.options(kind, OmegaConf.to_container(cfg[kind], resolve=True))
            component = spec.factory(for_plan(kind, spec.name, options, bundle), context)
            context.components[kind] = component
            built[kind] = (spec, options, component)
    return built


def module_of(component: Any) -> Any:
    """The torch module holding a component's tensors (the component itself, or its ``model``), or None."""
    from torch import nn

    if isinstance(component, nn.Module):
        return component
    model = getattr(component, "model", None)
    return model if isinstance(model, nn.Module) else None


def for_plan(kind: str, name: str, options: Any, bundle: Bundle | None) -> Any:
    """The options a meta build uses: the architecture the real load would get, no quantization, no dispatch."""
    if not dataclasses.is_dataclass(options):
        return options
    fields = {f.name for f in dataclasses.fields(options)}
    changes: dict[str, Any] = {k: None for k in ("quantization", "device_map") if k in fields}
    base = bundle.path if bundle is not None else Path.cwd()
    if kind == "llm" and name == "qwen2" and bundle is not None:
        arch = {k: bundle.config[k] for k in _QWEN2_ARCH if bundle.config.get(k) is not None}
        changes["arch"] = dataclasses.replace(options.arch, **arch, vocab_size=_vocab(bundle.path, bundle.config))
        changes["tokenizer"] = options.tokenizer or (str(bundle.path) if _has_tokenizer(bundle.path) else None)
    elif kind == "llm" and name == "hf_causal_lm" and (options.model or bundle is not None):
        from .causal_lm import LLM_CONFIG_KEYS

        directory = _config_dir(options.model, base, "llm.model") if options.model else bundle.path
        config = read_json(directory / "config.json")
        archs = [a for a in config.get("architectures") or [] if str(a).endswith("ForCausalLM")]
        keys = {k: v for k, v in config.items() if k in LLM_CONFIG_KEYS and v is not None}
        keys["vocab_size"] = _vocab(directory, config) if options.model is None else config.get("vocab_size")
        arch = archs[0].removesuffix("ForCausalLM") if options.model and archs else options.arch
        tokenizer = options.tokenizer or (str(directory) if _has_tokenizer(directory) else None)
        changes.update(model=None, config=keys, arch=arch, tokenizer=tokenizer)
    elif kind == "vision" and name == "internvit" and bundle is not None:
        from vita_plugins.vision.internvit.model import _arch_from_reference

        ref = _arch_from_reference(bundle.resolve("mm_vision_tower"))
        changes["arch"] = dataclasses.replace(options.arch, **{k: ref[k] for k in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size",
            "patch_size", "layer_norm_eps")})
    elif kind == "vision" and name == "siglip" and options.model:
        config = read_json(_config_dir(options.model, base, "vision.model") / "config.json")
        config = config.get("vision_config") or config
        changes.update(model=None, arch=dataclasses.replace(options.arch, **{k: config[k] for k in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size",
            "patch_size") if k in config}))
    elif kind == "vision" and name == "timm":
        changes["weights"] = None
    elif kind == "audio" and name == "whale" and bundle is not None:
        from vita_plugins.audio.whale.config import read_whale_config

        w = read_whale_config(bundle.resolve("mm_audio_encoder"))
        changes["arch"] = dataclasses.replace(options.arch, d_model=w.d_model, attention_heads=w.heads,
                                              linear_units=w.units, num_blocks=w.blocks, kernel_size=w.kernel_size,
                                              input_dim=w.input_dim, llm_embed_dim=w.llm_embed_dim)
    elif kind == "audio" and name == "whisper" and options.model:
        config = read_json(_config_dir(options.model, base, "audio.model") / "config.json")
        changes.update(model=None, arch=dataclasses.replace(options.arch, **{k: config[k] for k in (
            "d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins") if k in config}))
    return dataclasses.replace(options, **changes)


def _config_dir(value: str, base: Path, what: str) -> Path:
    """A model directory's configs: a local directory, or a hub id's config files only (never its weights)."""
    from .fetch import CONFIG_FILES

    return resolve_local_dir(str(value), base=base, what=what, patterns=CONFIG_FILES)


def _has_tokenizer(directory: Path) -> bool:
    return (directory / "tokenizer.json").is_file() or (directory / "tokenizer_config.json").is_file()


def _vocab(directory: Path, config: dict[str, Any]) -> int | None:
    """The vocabulary the load keeps: the tokenizer's length when the directory has one (the reference shrinks the
    embeddings to it), else ``config.json``'s ``vocab_size``."""
    if _has_tokenizer(directory):
        return None  # the factory takes len(tokenizer) of the tokenizer it is given
    value = config.get("vocab_size")
    return int(value) if isinstance(value, int) else None
