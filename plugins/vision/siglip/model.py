"""The heavy part of the SigLIP vision plugin (imported only when the component is built)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vita_framework.contracts import VisionBatch
from vita_framework.devices import torch_dtype
from vita_framework.errors import CheckpointError, ComponentConfigError, InputError
from vita_framework.quantization import quantize
from vita_framework.vision_tower import VisionTower
from vita_framework.weights import Bundle, load_into, read_json, resolve_local_dir

SIGLIP_TYPES = ("siglip", "siglip_vision_model")
SKIPPED = ("head.", "text_model.", "logit_scale", "logit_bias")


class SiglipEncoder(VisionTower):
    """``SiglipVisionModel`` tokens (last_hidden_state or one hidden state) per image."""

    def __init__(self, model: nn.Module, processor: Any, options: Any) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.options = options
        config = model.config
        self.hidden_size = int(config.hidden_size)
        self.image_size = int(config.image_size)
        self.tokens_per_tile = (config.image_size // config.patch_size) ** 2

    @classmethod
    def from_options(cls, options: Any, context: Any) -> SiglipEncoder:
        from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

        dtype = torch_dtype(context.dtype)
        if options.model:
            base = context.checkpoint.path if context.checkpoint is not None else Path.cwd()
            model_dir = resolve_local_dir(str(options.model), base=base, what="vision.model")
            model = _load_pretrained(model_dir, options)
            proc_file = model_dir / "preprocessor_config.json"
            processor = SiglipImageProcessor.from_pretrained(
                str(model_dir), trust_remote_code=False) if proc_file.is_file() else None
        else:
            a = options.arch
            config = SiglipVisionConfig(
                hidden_size=a.hidden_size, num_hidden_layers=a.num_hidden_layers,
                num_attention_heads=a.num_attention_heads, intermediate_size=a.intermediate_size,
                image_size=a.image_size, patch_size=a.patch_size, layer_norm_eps=a.layer_norm_eps,
                vision_use_head=False, attention_dropout=0.0, attn_implementation=options.attn_implementation,
            )
            model = SiglipVisionModel(config)
            bundle, prefix = context.checkpoint, options.weights_prefix
            if bundle is not None and prefix and bundle.has_prefix(prefix):
                load_into(model, bundle.load(prefix), what=f"SigLIP vision tower from '{bundle.path}' (prefix "
                          f"{prefix}; architecture from vision.arch)")
            else:
                warnings.warn(f"vision 'siglip' has RANDOM weights (no vision.model and no bundle tensors under "
                              f"'{prefix}')", stacklevel=2)
            processor = None
        layers = model.config.num_hidden_layers
        if not -(layers + 1) <= options.select_layer <= layers:
            raise ComponentConfigError(f"vision.select_layer={options.select_layer} is out of range for a "
                                       f"{layers}-layer SigLIP (hidden_states has {layers + 1} entries)")
        if processor is None:
            size = model.config.image_size
            processor = SiglipImageProcessor(size={"height": size, "width": size})
        model.to(device=context.device, dtype=dtype).eval()
        quantize(model, options.quantization, device=context.device, dtype=context.dtype, what="vision")
        return cls(model, processor, options)

    # -- preprocessing -------------------------------------------------------------------------------
    def preprocess(self, images: list[Any]) -> VisionBatch:
        if not images:
            raise InputError("no images to encode")
        pixels = self.processor([image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]
        return VisionBatch(pixels, [1] * len(images))

    # -- encoding ------------------------------------------------------------------------------------
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> [N, tokens_per_tile, hidden_size], differentiable (training calls it directly)."""
        pixels = self.model_input(pixel_values)
        layer = self.options.select_layer
        out = self.model(pixel_values=pixels, output_hidden_states=layer != -1)
        return out.last_hidden_state if layer == -1 else out.hidden_states[layer]


def _load_pretrained(model_dir: Path, options: Any) -> nn.Module:
    """Strict on the tower: a missing, unexpected or mis-shaped vision tensor is an error. Text-tower and
    pooling-head tensors of a full SiglipModel save are skipped (the head is not built)."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    model_type = read_json(model_dir / "config.json").get("model_type")
    if model_type not in SIGLIP_TYPES:
        raise CheckpointError(f"vision.model '{model_dir}' holds a '{model_type}' model, not SigLIP "
                              f"(model_type {' or '.join(SIGLIP_TYPES)})")
    config = SiglipVisionConfig.from_pretrained(str(model_dir), attn_implementation=options.attn_implementation,
                                                trust_remote_code=False)
    config.vision_use_head = False
    files = Bundle(model_dir)  # the same reader as bundles: single or sharded safetensors, pickles refused
    prefix = "vision_model." if files.has_prefix("vision_model.") else ""
    state = {k: v for k, v in files.load(prefix).items() if not k.startswith(SKIPPED)}
    model = SiglipVisionModel(config)
    load_into(model, state, what=f"SigLIP vision tower from '{model_dir}'")
    return model
