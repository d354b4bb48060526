"""The heavy part of the InternViT plugin (imported only when the component is built)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vita_framework.devices import torch_dtype
from vita_framework.errors import CheckpointError, ConfigError, InputError
from vita_framework.weights import load_into, read_json

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class VisionBatch:
    pixel_values: Any          # [P, 3, S, S] float32
    tiles_per_item: list[int]  # how many tiles each image (or frame) became


def pixel_shuffle(features: torch.Tensor, ratio: float) -> torch.Tensor:
    """[P, N, C] on a square grid -> [P, N*ratio^2, C/ratio^2]; output token (r, c) concatenates input tokens
    (2r,2c), (2r,2c+1), (2r+1,2c), (2r+1,2c+1) for ratio 0.5 (InternVL's order)."""
    tiles, tokens, channels = features.shape
    side = int(round(tokens ** 0.5))
    if side * side != tokens:
        raise ConfigError(f"pixel shuffle needs a square token grid; got {tokens} tokens")
    x = features.reshape(tiles, side, side, channels)
    x = x.view(tiles, side, int(side * ratio), int(channels / ratio))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.view(tiles, int(side * ratio), int(side * ratio), int(channels / (ratio * ratio)))
    x = x.permute(0, 2, 1, 3).contiguous()
    return x.reshape(tiles, -1, x.shape[-1])


def map_reference_keys(state: dict[str, torch.Tensor], hidden: int) -> dict[str, torch.Tensor]:
    """InternViT (reference) tensor names -> transformers ``InternVLVisionModel`` names."""
    out: dict[str, torch.Tensor] = {}
    renames = {
        "embeddings.class_embedding": "embeddings.cls_token",
        "embeddings.position_embedding": "embeddings.position_embeddings",
        "embeddings.patch_embedding.weight": "embeddings.patch_embeddings.projection.weight",
        "embeddings.patch_embedding.bias": "embeddings.patch_embeddings.projection.bias",
    }
    parts = {"attn.proj": "attention.projection_layer", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
             "norm1": "layernorm_before", "norm2": "layernorm_after", "ls1": "lambda_1", "ls2": "lambda_2",
             "attn.q_norm": "attention.q_norm", "attn.k_norm": "attention.k_norm"}
    for key, tensor in state.items():
        if key in renames:
            out[renames[key]] = tensor
            continue
        if key.startswith("encoder.layers."):
            _, _, idx, rest = key.split(".", 3)
            base = f"encoder.layer.{idx}."
            if rest.startswith("attn.qkv."):
                kind = rest.rsplit(".", 1)[-1]
                if tensor.shape[0] != 3 * hidden:
                    raise CheckpointError(
                        f"vision tensor '{key}' has shape {tuple(tensor.shape)}; expected first dim 3*{hidden}"
                    )
                for name, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.split(hidden, dim=0)):
                    out[f"{base}attention.{name}.{kind}"] = chunk
                continue
            for src, dst in parts.items():
                if rest.startswith(src + ".") or rest == src:
                    out[base + dst + rest[len(src):]] = tensor
                    break
            else:
                out[key] = tensor  # reported as unexpected by load_into
            continue
        out[key] = tensor
    return out


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


class InternViTEncoder(nn.Module):
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

    @classmethod
    def from_options(cls, options: Any, context: Any) -> InternViTEncoder:
        from transformers import InternVLVisionConfig, InternVLVisionModel

        if options.min_tiles < 1 or options.max_tiles < options.min_tiles:
            raise ConfigError(
                f"vision.min_tiles={options.min_tiles} and vision.max_tiles={options.max_tiles} must satisfy "
                "1 <= min_tiles <= max_tiles"
            )
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        bundle = context.checkpoint
        if bundle is not None:
            vdir = bundle.resolve("mm_vision_tower")
            arch = _arch_from_reference(vdir)
            proc_file = vdir / "preprocessor_config.json"
            if proc_file.is_file():
                proc = read_json(proc_file)
                mean = tuple(proc.get("image_mean", mean))
                std = tuple(proc.get("image_std", std))
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
        )
        config._attn_implementation = options.attn_implementation
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
            load_into(model, map_reference_keys(state, arch["hidden_size"]),
                      what=f"vision tower from '{bundle.path}' (prefix {options.weights_prefix})")
        else:
            warnings.warn("vision 'internvit' has RANDOM weights (no checkpoint given)", stacklevel=2)
            model = InternVLVisionModel(config)
        model.to(device=context.device, dtype=dtype).eval()
        return cls(model, options, image_size, patch_size, mean, std)

    # -- preprocessing -------------------------------------------------------------------------------
    def _tiling_processor(self):
        if self._tiler is None:
            from transformers import GotOcr2ImageProcessorPil

            self._tiler = GotOcr2ImageProcessorPil(
                crop_to_patches=True, min_patches=self.options.min_tiles, max_patches=self.options.max_tiles,
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
        """Dynamic tiling: a grid of tiles matching the aspect ratio, plus a thumbnail when >1 tile."""
        processor = self._tiling_processor()
        pixel_values, counts = [], []
        for image in images:
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
    @torch.inference_mode()
    def encode(self, batch: VisionBatch) -> list[torch.Tensor]:
        return list(self.features(batch.pixel_values).unbind(0))

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[P, 3, S, S] tiles -> [P, tokens_per_tile, hidden_size], differentiable.

        ``encode`` runs this under inference mode; training (``vita_framework.train``) calls it directly so
        the tower learns through exactly the feature path generation uses.
        """
        param = next(self.model.parameters())
        pixels = pixel_values.to(device=param.device, dtype=param.dtype)
        layer = self.options.select_layer
        out = self.model(pixel_values=pixels, output_hidden_states=layer != -1)
        hidden = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
        features = hidden[:, 1:] * self.options.feature_scale
        return pixel_shuffle(features, self.options.downsample_ratio)
