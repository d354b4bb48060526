"""The InternViT encoder module (heavy: imported only when the component is built)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vita_framework.contracts import VisionBatch
from vita_framework.devices import torch_dtype
from vita_framework.errors import CheckpointError, ConfigError, InputError
from vita_framework.media.image import pad_to_square
from vita_framework.ops import pixel_shuffle
from vita_framework.quantization import quantize
from vita_framework.vision_tower import VisionTower
from vita_framework.weights import load_into, read_json

from .keymap import from_reference, to_reference

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_MAX_TILES = 12  # VITA-1.5's dynamic_preprocess max_num


def _bundle_max_tiles(value: Any, path: Path) -> int:
    """The tower's own ``max_patches``, checked (a bundle trained on single tiles says 1)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(f"'{path}': max_patches must be a whole number >= 1; got {value!r}")
    return value


def _bundle_pad(value: Any, path: Path) -> bool:
    if not isinstance(value, bool):
        raise CheckpointError(f"'{path}': pad_to_square must be true or false; got {value!r}")
    return value


def _arch_from_reference(path: Path) -> dict[str, Any]:
    cfg = read_json(path / "config.json")
    try:
        return {
            "hidden_size": cfg["hidden_size"], "num_hidden_layers": cfg["num_hidden_layers"],
            "num_attention_heads": cfg["num_attention_heads"], "intermediate_size": cfg["intermediate_size"],
            "image_size": cfg.get("image_size", 448), "patch_size": cfg.get("patch_size", 14),
            "layer_norm_eps": cfg.get("layer_norm_eps", 1e-6), "hidden_act": cfg.get("hidden_act", "gelu"),
            "attention_bias": cfg.get("qkv_bias", True), "use_qk_norm": cfg.get("qk_normalization", False),
            "norm_type": cfg.get("norm_type", "layer_norm"),
        }
    except KeyError as exc:
        raise CheckpointError(f"'{path / 'config.json'}' lacks the InternViT key {exc}") from None


class InternViTEncoder(VisionTower):
    """InternViT tower + VITA's feature post-processing, with tiling and frame preprocessing."""

    def __init__(self, model: nn.Module, options: Any, image_size: int, patch_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.options = options
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)
        ratio = options.downsample_ratio
        grid = image_size // patch_size
        self.tokens_per_tile = int(round((grid * ratio) ** 2))
        self.hidden_size = int(round(model.config.hidden_size / (ratio * ratio)))
        self._tiler = None
        self._framer = None
        #: tiles per image at most: vision.max_tiles, else the bundle's max_patches, else DEFAULT_MAX_TILES
        self.max_tiles = DEFAULT_MAX_TILES if options.max_tiles is None else int(options.max_tiles)
        #: images padded to a square before tiling: vision.pad_to_square, else the bundle's, else False
        self.pad_to_square = bool(options.pad_to_square)
        #: the padding colour: the processor's mean in 0-255 (VITA's expand2square), about zero once normalised
        self.pad_colour = tuple(int(round(m * 255)) for m in self.mean)

    @classmethod
    def from_options(cls, options: Any, context: Any) -> InternViTEncoder:
        from transformers import InternVLVisionConfig, InternVLVisionModel

        mean, std = IMAGENET_MEAN, IMAGENET_STD
        bundle, max_tiles, pad = context.checkpoint, options.max_tiles, options.pad_to_square
        if bundle is not None:
            vdir = bundle.resolve("mm_vision_tower")
            arch = _arch_from_reference(vdir)
            proc_file = vdir / "preprocessor_config.json"
            if proc_file.is_file():
                proc = read_json(proc_file)
                mean = tuple(proc.get("image_mean", mean))
                std = tuple(proc.get("image_std", std))
                if max_tiles is None and proc.get("max_patches") is not None:
                    max_tiles = _bundle_max_tiles(proc["max_patches"], proc_file)
                if pad is None and proc.get("pad_to_square") is not None:
                    pad = _bundle_pad(proc["pad_to_square"], proc_file)
        else:
            a = options.arch
            arch = {"hidden_size": a.hidden_size, "num_hidden_layers": a.num_hidden_layers,
                    "num_attention_heads": a.num_attention_heads, "intermediate_size": a.intermediate_size,
                    "image_size": a.image_size, "patch_size": a.patch_size, "layer_norm_eps": a.layer_norm_eps,
                    "hidden_act": "gelu", "attention_bias": True, "use_qk_norm": False,
                    "norm_type": "layer_norm"}
        image_size, patch_size = arch.pop("image_size"), arch.pop("patch_size")
        config = InternVLVisionConfig(
            **arch, image_size=image_size, patch_size=patch_size, num_channels=3,
            use_mean_pooling=True,  # keeps the final layernorm an Identity: InternViT has no final norm
            use_absolute_position_embeddings=True, use_mask_token=False,
            hidden_dropout_prob=0.0, attention_dropout=0.0, projection_dropout=0.0,
            attn_implementation=options.attn_implementation,
        )
        dtype = torch_dtype(context.dtype)
        if bundle is not None:
            with torch.device("meta"):
                model = InternVLVisionModel(config)
            state = bundle.load(options.weights_prefix)
            if not state:
                raise CheckpointError(
                    f"checkpoint '{bundle.path}' has no vision tensors under '{options.weights_prefix}'; "
                    "drop +vision (text-only) or use a checkpoint with a vision tower"
                )
            load_into(model, from_reference(state, arch["hidden_size"]),
                      what=f"vision tower from '{bundle.path}' (prefix {options.weights_prefix})")
        else:
            warnings.warn("vision 'internvit' has RANDOM weights (no checkpoint given)", stacklevel=2)
            model = InternVLVisionModel(config)
        model.to(device=context.device, dtype=dtype).eval()
        quantize(model, options.quantization, device=context.device, dtype=context.dtype, what="vision")
        encoder = cls(model, options, image_size, patch_size, mean, std)
        encoder.max_tiles = DEFAULT_MAX_TILES if max_tiles is None else int(max_tiles)
        encoder.pad_to_square = bool(pad)
        if encoder.max_tiles < options.min_tiles:
            raise ConfigError(f"vision.min_tiles={options.min_tiles} is above the {encoder.max_tiles} tile(s) this "
                              "tower allows; lower vision.min_tiles or set vision.max_tiles")
        return encoder

    # -- preprocessing -------------------------------------------------------------------------------
    def _tiling_processor(self):
        if self._tiler is None:
            from transformers import GotOcr2ImageProcessorPil

            self._tiler = GotOcr2ImageProcessorPil(
                crop_to_patches=True, min_patches=self.options.min_tiles, max_patches=self.max_tiles,
                size={"height": self.image_size, "width": self.image_size},
                image_mean=list(self.mean), image_std=list(self.std), do_convert_rgb=True,
            )
        return self._tiler

    def _frame_processor(self):
        if self._framer is None:
            from transformers import CLIPImageProcessorPil

            self._framer = CLIPImageProcessorPil(
                size={"shortest_edge": self.image_size},
                crop_size={"height": self.image_size, "width": self.image_size}, resample=3,
                image_mean=list(self.mean), image_std=list(self.std), do_convert_rgb=True,
            )
        return self._framer

    def preprocess(self, images: list[Any]) -> VisionBatch:
        """Dynamic tiling: a grid of tiles matching the aspect ratio, plus a thumbnail when >1 tile (with
        ``pad_to_square``, of the image padded to a square first: one tile per grid cell of a square)."""
        processor = self._tiling_processor()
        pixel_values, counts = [], []
        for image in images:
            if self.pad_to_square:  # resized to a tile, the padded image keeps every shape's proportions
                image = pad_to_square(image.convert("RGB"), self.pad_colour)
            out = processor(image, return_tensors="pt")
            pixel_values.append(out["pixel_values"])
            counts.append(int(out["num_patches"][0]) if "num_patches" in out else out["pixel_values"].shape[0])
        return VisionBatch(torch.cat(pixel_values), counts)

    def preprocess_frames(self, frames: list[Any]) -> VisionBatch:
        """Video frames: shortest edge to the tile size (bicubic), centre crop, no tiling."""
        if not frames:
            raise InputError("a video gave no frames to encode")
        out = self._frame_processor()(frames, return_tensors="pt")
        return VisionBatch(out["pixel_values"], [1] * len(frames))

    # -- encoding ------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The tower in the reference's names (fused qkv), as a VITA-1.5 bundle stores it."""
        return to_reference(self.model.state_dict())

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[P, 3, S, S] tiles -> [P, tokens_per_tile, hidden_size], differentiable.

        ``encode`` runs this under inference mode; training (``vita_framework.train``) calls it directly so
        the tower learns through exactly the feature path generation uses.
        """
        pixels = self.model_input(pixel_values)
        layer = self.options.select_layer
        out = self.model(pixel_values=pixels, output_hidden_states=layer != -1)
        hidden = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
        features = hidden[:, 1:] * self.options.feature_scale
        return pixel_shuffle(features, self.options.downsample_ratio)
