"""SigLIP vision encoder through transformers' ``SiglipVisionModel`` (``+vision=siglip``).

SigLIP has no CLS token, so every patch token is kept: (image_size / patch_size)^2 tokens per image of the
tower's width. One tile per image (``SiglipImageProcessor``: a plain resize, as SigLIP was trained). The
attention-pooling head is never used and is not built. Weights come from ``vision.model``, else from the bundle
under ``weights_prefix`` (``SiglipVisionModel`` key names, as ``checkpoint_state`` writes them), else random.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vita_framework.arch import VisionTowerArch
from vita_framework.hookspecs import hookimpl
from vita_framework.quantization import check_mode


@dataclass
class SiglipArch(VisionTowerArch):
    """SigLIP's tiny default: 224-pixel images, 16-pixel patches (196 tokens)."""


@dataclass
class SiglipOptions:
    #: a local SigLIP directory (config.json + safetensors; a SiglipModel or SiglipVisionModel save) or a hub
    #: id in the local cache; None: the tower of `arch` with the bundle's tensors under weights_prefix when it
    #: has them, else random init (warning)
    model: str | None = None
    weights_prefix: str = "model.vision_tower.siglip."
    #: -1: last_hidden_state (after the post-layernorm); otherwise hidden_states[select_layer] (0: embeddings)
    select_layer: int = -1
    attn_implementation: str = "sdpa"
    quantization: str | None = None  # int8 | int4 (torchao) | bnb_int8 | bnb_nf4 (CUDA): the tower's Linear layers
    arch: SiglipArch = field(default_factory=SiglipArch)

    def __post_init__(self) -> None:
        check_mode(self.quantization, "vision.quantization")


def build_siglip(options: SiglipOptions, context: Any) -> Any:
    from .model import SiglipEncoder

    return SiglipEncoder.from_options(options, context)


@hookimpl
def vita_register_vision_encoders(register):
    register("siglip", build_siglip, schema=SiglipOptions,
             description="transformers SiglipVisionModel, all patch tokens (no CLS), one tile per image")
