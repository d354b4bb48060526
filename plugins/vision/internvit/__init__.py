"""InternViT vision encoder (VITA-1.5's tower), built on transformers' ``InternVLVisionModel``.

Per 448 tile: the last layer's tokens with CLS dropped, multiplied by 0.5 (a quirk of VITA-1.5 that its
trained weights expect), then the 2x2 pixel shuffle -> 256 tokens of width 4*C. Images are tiled with
``GotOcr2ImageProcessorPil`` (the Pil class: the torchvision backend is ~2 u8 levels off the reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vita_framework.arch import VisionTowerArch
from vita_framework.hookspecs import hookimpl
from vita_framework.quantization import check_mode


@dataclass
class InternViTArch(VisionTowerArch):
    image_size: int = 448
    patch_size: int = 14


@dataclass
class InternViTOptions:
    #: None: the tower's preprocessor_config.json ``max_patches`` (a bundle trained on one tile says 1), else 12
    #: (VITA-1.5's ``max_num``)
    max_tiles: int | None = None
    min_tiles: int = 1
    #: pad each image to a square (VITA's expand2square: the processor's mean colour, centred) before tiling, so
    #: shapes keep their proportions at any aspect ratio; None: the tower's preprocessor_config.json
    #: ``pad_to_square`` (a bundle trained on padded images says true), else false (VITA-1.5 resizes)
    pad_to_square: bool | None = None
    select_layer: int = -1
    downsample_ratio: float = 0.5
    feature_scale: float = 0.5
    attn_implementation: str = "sdpa"
    weights_prefix: str = "model.vision_tower.vision_tower."
    quantization: str | None = None  # int8 | int4 (torchao) | bnb_int8 | bnb_nf4 (CUDA): the tower's Linear layers
    arch: InternViTArch = field(default_factory=InternViTArch)

    def __post_init__(self) -> None:
        check_mode(self.quantization, "vision.quantization")
        if self.min_tiles < 1 or (self.max_tiles is not None and self.min_tiles > self.max_tiles):
            raise ValueError(f"vision.min_tiles={self.min_tiles} and vision.max_tiles={self.max_tiles} must "
                             "satisfy 1 <= min_tiles <= max_tiles")


def build_internvit(options: InternViTOptions, context) -> Any:
    from .model import InternViTEncoder

    return InternViTEncoder.from_options(options, context)


@hookimpl
def vita_register_vision_encoders(register):
    register("internvit", build_internvit, schema=InternViTOptions,
             description="InternViT + x0.5 + 2x2 pixel shuffle, 256 tokens per 448 tile (VITA-1.5)")
