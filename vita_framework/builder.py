"""From a composed config to a built :class:`~vita_framework.pipeline.Pipeline` (imports torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import CheckpointError
from .generation import validate_generation_options
from .plugins import get_registry
from .registry import BuildContext
from .schema import validate_run_config
from .weights import Bundle, default_bundle_path


def open_checkpoint(value: Any, *, allow_pickle: bool = False) -> Bundle | None:
    if value is None or str(value).lower() in {"null", "none", "random"}:
        return None
    path = default_bundle_path() if str(value) == "default" else value
    if str(value) == "default" and not default_bundle_path().is_dir():
        raise CheckpointError(
            f"the embedded default bundle is missing at '{default_bundle_path()}'; rebuild it with "
            "`python scripts/build_default_bundle.py`"
        )
    return Bundle(path, allow_pickle=allow_pickle)


def build_pipeline(cfg: Any) -> Any:
    """Build every configured component (LLM first, so widths are derived from built parts)."""
    import warnings

    import torch
    from omegaconf import OmegaConf

    from .devices import resolve_device, resolve_dtype
    from .pipeline import Pipeline

    validate_run_config(cfg)
    generation = OmegaConf.to_container(cfg.generation, resolve=True) if cfg.get("generation") else {}
    validate_generation_options(generation)
    registry = get_registry()
    bundle = open_checkpoint(cfg.get("checkpoint"), allow_pickle=bool(cfg.get("allow_pickle", False)))
    if bundle is None:
        warnings.warn("checkpoint=null: every component gets RANDOM weights; answers are noise", stacklevel=2)
    device = resolve_device(str(cfg.get("device", "auto")))
    ckpt_dtype = (bundle.config.get("torch_dtype") or bundle.config.get("dtype")) if bundle else None
    dtype = resolve_dtype(str(cfg.get("dtype", "auto")), device, ckpt_dtype)
    context = BuildContext(checkpoint=bundle, dtype=dtype, device=device,
                           init="checkpoint" if bundle else "random")
    if cfg.get("seed") is not None:
        torch.manual_seed(int(cfg.seed))
    llm = context.components["llm"] = registry.build("llm", cfg.llm, context)
    vision = projector = audio = None
    if cfg.get("vision") is not None:
        vision = context.components["vision"] = registry.build("vision", cfg.vision, context)
        projector = context.components["projector"] = registry.build("projector", cfg.projector, context)
    if cfg.get("audio") is not None:
        audio = context.components["audio"] = registry.build("audio", cfg.audio, context)
    fusion = context.components["fusion"] = registry.build("fusion", cfg.fusion, context)
    limits = [getattr(getattr(getattr(llm, "model", None), "config", None), "max_position_embeddings", None)]
    if bundle is not None:
        limits.append(bundle.config.get("tokenizer_model_max_length"))
    limits = [int(v) for v in limits if isinstance(v, int) and v > 0]
    video = OmegaConf.to_container(cfg.video, resolve=True) if cfg.get("video") else {}
    return Pipeline(llm=llm, fusion=fusion, vision=vision, projector=projector, audio=audio,
                    template=str(cfg.get("template", "qwen2p5_instruct")), generation=generation,
                    seed=cfg.get("seed"), config=cfg, max_length=min(limits) if limits else None, video=video)


def build(overrides: Sequence[str] = (), *, config: Any = None) -> Any:
    """The Python API: ``build(["+vision=internvit", "+audio=none"]).generate("What is this?", images=[...])``."""
    from .config import compose

    cfg = config if config is not None else compose(list(overrides))
    return build_pipeline(cfg)
