"""The heavy part of the timm vision plugin (imported only when the component is built)."""

from __future__ import annotations

import difflib
import inspect
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vita_framework.contracts import VisionBatch
from vita_framework.devices import torch_dtype
from vita_framework.errors import CheckpointError, ComponentConfigError, ConfigError, InputError
from vita_framework.ops import pixel_shuffle
from vita_framework.vision_tower import VisionTower
from vita_framework.weights import load_into, resolve_local_dir


def create_model(options: Any) -> nn.Module:
    """``timm.create_model`` with pretrained=False; an unknown name or a bad kwarg becomes a config error."""
    import timm

    if not timm.is_model(options.model):
        close = difflib.get_close_matches(options.model, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ComponentConfigError(f"vision.model='{options.model}' is not a timm model.{hint} "
                                   "See timm.list_models('*pattern*')")
    try:
        return timm.create_model(options.model, pretrained=False, num_classes=0, **dict(options.model_kwargs))
    except TypeError as exc:
        raise ComponentConfigError(f"vision.model_kwargs={dict(options.model_kwargs)} do not fit timm model "
                                   f"'{options.model}': {exc}") from None


def resolve_weights(value: str, bundle: Any) -> Path:
    """A safetensors file, or a directory (local, beside the bundle, or a cached hub id) with model.safetensors.

    Pickles are refused: timm checkpoints on the hub ship model.safetensors, and pickles can run code.
    """
    base = bundle.path if bundle is not None else Path.cwd()
    for candidate in (Path(value).expanduser(), base / value):
        if candidate.is_file():
            if candidate.suffix != ".safetensors":
                raise CheckpointError(f"vision.weights='{value}' is not a .safetensors file; convert it first")
            return candidate
    is_dir = any(c.is_dir() for c in (Path(value).expanduser(), base / value))
    if not is_dir and (value.count("/") != 1 or value.endswith(".safetensors")):  # not a hub id either
        raise CheckpointError(f"vision.weights='{value}' is neither a safetensors file nor a directory")
    directory = resolve_local_dir(value, base=base, what="vision.weights")
    file = directory / "model.safetensors"
    if not file.is_file():
        raise CheckpointError(f"vision.weights directory '{directory}' has no model.safetensors")
    return file


def _drop_classifier(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Checkpoints saved with a head carry classifier tensors that a num_classes=0 model lacks; timm's own
    pretrained loader drops them too, so they are not reported as unexpected."""
    names = model.pretrained_cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    own = model.state_dict()
    return {k: v for k, v in state.items()
            if k in own or not any(k.startswith(n + ".") for n in names)}


class TimmVisionEncoder(VisionTower):
    """A timm model's chosen feature layer as ``[tokens, width]`` per image, with optional grid reduction."""

    def __init__(self, model: nn.Module, options: Any, index: int, transform: Any, image_size: int,
                 grid: tuple[int, int], channels: int, prefix: int) -> None:
        super().__init__()
        self.model = model
        self.options = options
        self.index = index
        self.transform = transform
        self.prefix = prefix  # prefix tokens kept in the output (0 when dropped)
        self.image_size = int(image_size)
        f = options.reduce_factor
        if options.reduce == "pixel_shuffle":
            self.tokens_per_tile = (grid[0] // f) * (grid[1] // f)
            self.hidden_size = channels * f * f
        elif options.reduce == "avg_pool":
            self.tokens_per_tile = math.ceil(grid[0] / f) * math.ceil(grid[1] / f)
            self.hidden_size = channels
        else:
            self.tokens_per_tile = grid[0] * grid[1] + prefix
            self.hidden_size = channels

    @classmethod
    def from_options(cls, options: Any, context: Any) -> TimmVisionEncoder:
        import timm.data

        model = create_model(options)
        if not hasattr(model, "forward_intermediates") or not getattr(model, "feature_info", None):
            raise ComponentConfigError(f"timm model '{options.model}' has no forward_intermediates/feature_info; "
                                       "pick a model family that supports it (ViT, ConvNeXt, ResNet, ...)")
        n = len(model.feature_info)
        if not -n <= options.layer < n:
            raise ComponentConfigError(f"vision.layer={options.layer} is out of range for '{options.model}' "
                                       f"({n} feature layers: -{n}..{n - 1})")
        index = options.layer % n
        info = model.feature_info[index]
        channels, reduction = int(info["num_chs"]), int(info["reduction"])
        data_args: dict[str, Any] = {}
        embed = getattr(model, "patch_embed", None)
        if getattr(embed, "img_size", None) is not None:  # the pretrained cfg may not know a model_kwargs size
            data_args["input_size"] = (3, *tuple(embed.img_size))
        data_cfg = timm.data.resolve_data_config(data_args, model=model)
        _, height, width = data_cfg["input_size"]
        patch = getattr(embed, "patch_size", None)
        patch = patch[0] if isinstance(patch, (tuple, list)) else patch
        if getattr(embed, "grid_size", None) is not None and patch == reduction:
            grid = (int(embed.grid_size[0]), int(embed.grid_size[1]))
        else:
            grid = (math.ceil(height / reduction), math.ceil(width / reduction))
        prefix = 0 if options.drop_prefix_tokens else int(getattr(model, "num_prefix_tokens", 0) or 0)
        if prefix and "return_prefix_tokens" not in inspect.signature(model.forward_intermediates).parameters:
            raise ComponentConfigError(f"timm model '{options.model}' cannot return its prefix tokens from "
                                       "forward_intermediates; set vision.drop_prefix_tokens=true")
        f = options.reduce_factor
        r = 1.0 / f  # pixel_shuffle works with a float ratio: make sure its int() casts come out exact
        exact = int(grid[0] * r) == grid[0] // f and int(channels / (r * r)) == channels * f * f
        if options.reduce == "pixel_shuffle" and (grid[0] != grid[1] or grid[0] % f or not exact):
            raise ComponentConfigError(f"vision.reduce=pixel_shuffle needs a square grid divisible by "
                                       f"reduce_factor={f}; '{options.model}' gives {grid[0]}x{grid[1]} "
                                       "(use reduce=avg_pool, or another image size via model_kwargs)")
        full = set(model.state_dict())
        if hasattr(model, "prune_intermediate_layers"):  # later blocks, final norm and head are never used
            try:
                model.prune_intermediate_layers([index], prune_norm=not options.norm, prune_head=True)
            except (NotImplementedError, AssertionError, AttributeError, TypeError):
                pass
        _load_weights(model, options, context.checkpoint, pruned=full - set(model.state_dict()))
        model.to(device=context.device, dtype=torch_dtype(context.dtype)).eval()
        transform = timm.data.create_transform(**data_cfg)
        return cls(model, options, index, transform, height, grid, channels, prefix)

    # -- preprocessing -------------------------------------------------------------------------------
    def preprocess(self, images: list[Any]) -> VisionBatch:
        """timm's eval transform for the model (resize, centre crop, normalise); one tile per image."""
        if not images:
            raise InputError("no images to encode")
        pixels = torch.stack([self.transform(image.convert("RGB")) for image in images])
        return VisionBatch(pixels, [1] * len(images))

    # -- encoding ------------------------------------------------------------------------------------
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> [N, tokens_per_tile, hidden_size], differentiable (training calls it directly)."""
        pixels = self.model_input(pixel_values)
        kwargs: dict[str, Any] = {"indices": [self.index], "intermediates_only": True}
        if self.options.norm:
            kwargs["norm"] = True
        if self.prefix:
            kwargs["return_prefix_tokens"] = True
        out = self.model.forward_intermediates(pixels, **kwargs)[0]
        spatial, prefix_tokens = out if isinstance(out, tuple) else (out, None)
        if spatial.ndim == 3:  # NLC: assume a square grid
            side = int(round(spatial.shape[1] ** 0.5))
            spatial = spatial.transpose(1, 2).reshape(spatial.shape[0], spatial.shape[2], side, -1)
        f = self.options.reduce_factor
        if self.options.reduce == "avg_pool" and f > 1:
            spatial = nn.functional.avg_pool2d(spatial, f, f, ceil_mode=True)
        tokens = spatial.flatten(2).transpose(1, 2)
        if self.options.reduce == "pixel_shuffle" and f > 1:
            tokens = pixel_shuffle(tokens.contiguous(), 1.0 / f)
        if prefix_tokens is not None:
            tokens = torch.cat([prefix_tokens, tokens], dim=1)
        self._check(tokens)
        return tokens

    def _check(self, tokens: torch.Tensor) -> None:
        if tokens.shape[-1] != self.hidden_size:
            raise ConfigError(f"timm model '{self.options.model}' gave width {tokens.shape[-1]} at layer "
                              f"{self.options.layer}, but {self.hidden_size} was derived from its feature_info")
        if tokens.shape[1] != self.tokens_per_tile:  # only the pre-encode token budget relies on it
            warnings.warn(f"timm model '{self.options.model}' gave {tokens.shape[1]} tokens per image, not the "
                          f"{self.tokens_per_tile} derived from its config", stacklevel=3)
            self.tokens_per_tile = int(tokens.shape[1])


def _load_weights(model: nn.Module, options: Any, bundle: Any, pruned: set[str]) -> None:
    """Strictly from vision.weights, else the bundle's prefix, else leave timm's random init (warning).

    ``model`` is already pruned to the layer used: tensors of the ``pruned`` parts (a full timm checkpoint has
    them, a bundle saved from ``checkpoint_state`` does not) are dropped, every kept tensor must be there.
    """
    if options.weights:
        from safetensors.torch import load_file

        file = resolve_weights(str(options.weights), bundle)
        try:
            state = load_file(str(file))
        except Exception as exc:
            raise CheckpointError(f"'{file}' is not a readable safetensors file: {exc}") from None
        what = f"timm '{options.model}' from '{file}'"
    elif bundle is not None and bundle.has_prefix(options.weights_prefix):
        state = bundle.load(options.weights_prefix)
        what = f"timm '{options.model}' from '{bundle.path}' (prefix {options.weights_prefix})"
    else:
        state = None
    if state is not None:
        state = {k: v for k, v in _drop_classifier(state, model).items() if k not in pruned}
        load_into(model, state, what=what)
    else:
        warnings.warn(f"vision 'timm' ({options.model}) has RANDOM weights (no vision.weights and no bundle "
                      f"tensors under '{options.weights_prefix}')", stacklevel=3)
