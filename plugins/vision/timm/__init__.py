"""Any timm model as the vision encoder (``+vision=timm vision.model=vit_so400m_patch14_siglip_384``).

The model is created with ``pretrained=False`` (nothing is downloaded); its weights come from a local
safetensors file in timm's own key names, from the bundle under ``weights_prefix``, or stay random (with a
warning). Features are one layer taken with ``forward_intermediates``, so any timm family that implements it
(ViTs, ConvNets, hybrids) works; an optional 2x2-style reduction trades tokens for width (pixel shuffle, as
VITA does for InternViT) or for nothing (average pooling). One tile per image: no dynamic tiling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vita_framework.errors import ComponentConfigError
from vita_framework.hookspecs import hookimpl

REDUCTIONS = ("none", "pixel_shuffle", "avg_pool")


@dataclass
class TimmVisionOptions:
    #: a timm model name (``timm.list_models()``); created with pretrained=False, num_classes=0
    model: str = "vit_tiny_patch16_224"
    #: a local safetensors file, or a directory holding model.safetensors, in timm's key names;
    #: None: tensors from the bundle under weights_prefix when it has them, else random init (warning)
    weights: str | None = None
    weights_prefix: str = "model.vision_tower.timm."
    #: which ``forward_intermediates`` feature to use (indices=[layer]; -1 = last block/stage)
    layer: int = -1
    #: apply the model's final norm to the chosen layer (timm's ``norm=True``; raw block output otherwise)
    norm: bool = False
    #: drop CLS / register tokens (``model.num_prefix_tokens``), keeping the square patch grid
    drop_prefix_tokens: bool = True
    #: none | pixel_shuffle (f*f tokens -> one token of f*f*C) | avg_pool (f x f mean, same C)
    reduce: str = "none"
    reduce_factor: int = 2
    #: extra ``timm.create_model`` keyword arguments, e.g. {img_size: 224, dynamic_img_size: false}
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def build_timm(options: TimmVisionOptions, context: Any) -> Any:
    if options.reduce not in REDUCTIONS:
        raise ComponentConfigError(f"vision.reduce='{options.reduce}' is not one of {', '.join(REDUCTIONS)}")
    if options.reduce_factor < 1:
        raise ComponentConfigError(f"vision.reduce_factor must be >= 1; got {options.reduce_factor}")
    if options.reduce != "none" and not options.drop_prefix_tokens:
        raise ComponentConfigError(
            f"vision.reduce={options.reduce} works on the patch grid only; set vision.drop_prefix_tokens=true"
        )
    try:
        import timm  # noqa: F401
    except (ImportError, RuntimeError, OSError) as exc:  # absent, or its torchvision cannot load
        raise ComponentConfigError(
            f"vision=timm needs the timm package, which cannot be imported here ({type(exc).__name__}: {exc}). "
            "timm needs torchvision; the vLLM venv (scripts/make-vllm-venv) leaves both out on CPU because the "
            "registry's torchvision build cannot load beside vLLM's CPU torch. Use vision=internvit or "
            "vision=siglip with llm=vllm, or run vision=timm in the main venv (pip install -e .)") from None
    from .model import TimmVisionEncoder

    return TimmVisionEncoder.from_options(options, context)


@hookimpl
def vita_register_vision_encoders(register):
    register("timm", build_timm, schema=TimmVisionOptions,
             description="any timm model (pretrained=False; local safetensors), one layer, optional 2x2 reduction")
