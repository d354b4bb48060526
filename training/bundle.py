"""Writing a bundle in the VITA-1.5 layout from built components, and the untrained starting bundle.

This lives in the package (not in ``scripts/``) because the trainer writes the embedded default bundle with it;
``scripts/build_default_bundle.py`` is a thin command line over the same functions. The layout is exactly the
one ``vita_framework.weights.Bundle`` and the plugins read for a real VITA-1.5 checkpoint: ``config.json`` with
the ``mm_*`` keys, the InternViT sub-directory with its config and image-processor config, one
``model.safetensors`` with the reference's key names (fused ``qkv``), tokenizer files and
``generation_config.json``; plus ``bundle_info.json`` saying how the weights were made.

Tensor names are never spelled here: each component's ``checkpoint_state()`` names its tensors as its loader
reads them, under the prefix its registered spec claims for the run config (:func:`weight_prefixes`).
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tokenizer import TOKENIZER_FILES, build_tokenizer, tokenizer_corpus

VISION_DIR = "InternViT-tiny"
AUDIO_DIR = "audio-encoder-tiny"  # the whale encoder's train.yaml and global_cmvn (config.json mm_audio_encoder)
#: the run config the trained bundle serves (with checkpoint, device and seed added by :func:`run_overrides`)
RUN_OVERRIDES = ("+vision=internvit", "+audio=none", "dtype=float32")
VISION_LAYER_NORM_EPS = 1e-6
#: the bundle is trained on whole images resized to one tile (any aspect ratio), so it asks for one
#: (the tower's preprocessor_config.json max_patches, read when vision.max_tiles is null)
TILES_PER_IMAGE = 1
#: LLM config values that are not sizes: the same for the random init and the written config.json
LLM_FIXED = {"rms_norm_eps": 1e-6, "rope_theta": 1e6, "max_position_embeddings": 32768,
             "tie_word_embeddings": False, "hidden_act": "silu"}


@dataclass
class Architecture:
    """Sizes of the three trained parts. ``image_size / patch_size`` patches per side, /2 after pixel shuffle."""

    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 128
    image_size: int = 224
    patch_size: int = 14
    llm_hidden: int = 128
    llm_layers: int = 2
    llm_heads: int = 4
    llm_kv_heads: int = 2
    llm_intermediate: int = 256
    vision_init_std: float = 0.02  # initializer_range of each transformer (used only to initialise)
    vision_position_std: float = 1.0  # InternViT draws its position and class embeddings from randn
    llm_init_std: float = 0.02

    def vision_config(self) -> dict[str, Any]:
        """The tower's sizes, named as InternViT's ``config.json`` (and ``vision.arch``) names them."""
        return dict(hidden_size=self.vision_hidden, num_hidden_layers=self.vision_layers,
                    num_attention_heads=self.vision_heads, intermediate_size=self.vision_intermediate,
                    image_size=self.image_size, patch_size=self.patch_size, layer_norm_eps=VISION_LAYER_NORM_EPS)

    def llm_config(self) -> dict[str, Any]:
        """The LLM's architecture, named as the bundle's ``config.json`` names it (vocabulary aside)."""
        return dict(hidden_size=self.llm_hidden, intermediate_size=self.llm_intermediate,
                    num_hidden_layers=self.llm_layers, num_attention_heads=self.llm_heads,
                    num_key_value_heads=self.llm_kv_heads, **LLM_FIXED)


def run_overrides(checkpoint: Any, device: str = "cpu", seed: int = 0) -> list[str]:
    return [*RUN_OVERRIDES, f"checkpoint={checkpoint}", f"device={device}", f"seed={seed}"]


def build_pipeline(checkpoint: Path, device: str = "cpu", seed: int = 0) -> tuple[Any, Any]:
    """(the pipeline generation builds from ``checkpoint``, its composed run config)."""
    import vita_framework
    from vita_framework.config import compose

    cfg = compose(run_overrides(checkpoint, device, seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return vita_framework.build(config=cfg), cfg


def weight_prefixes(cfg: Any) -> dict[str, str]:
    """Where each kind's ``checkpoint_state()`` goes in the bundle: the prefix its component claims for ``cfg``
    (the LLM's tensors already carry their full names)."""
    from vita_framework.plugin_manager import get_plugins

    registry = get_plugins().registry
    prefixes = {"llm": ""}
    audio = cfg.get("audio")
    for kind in ("vision", "projector", *(["audio"] if audio is not None and audio.component != "none" else [])):
        spec, options = registry.options(kind, cfg[kind])
        claimed = spec.claimed_prefixes(options)
        if len(claimed) != 1:
            raise ValueError(f"{kind} '{spec.name}' claims {claimed}; a trained bundle needs exactly one prefix")
        prefixes[kind] = claimed[0]
    return prefixes


def component_tensors(components: dict[str, Any], prefixes: dict[str, str]) -> dict[str, Any]:
    """Every component's ``checkpoint_state()`` under its prefix: the tensors of a bundle."""
    return {prefixes[kind] + key: value for kind, component in components.items()
            for key, value in component.checkpoint_state().items()}


def random_modules(arch: Architecture, vocab: int, seed: int) -> tuple[Any, Any, Any]:
    """Freshly initialised (InternVLVisionModel, mlp2x_gelu projector, Qwen2ForCausalLM) of ``arch``."""
    import torch
    from torch import nn
    from transformers import InternVLVisionConfig, InternVLVisionModel, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    vit = InternVLVisionModel(InternVLVisionConfig(
        **arch.vision_config(), hidden_act="gelu", attention_bias=True, use_qk_norm=False, norm_type="layer_norm",
        use_mean_pooling=True, use_absolute_position_embeddings=True, use_mask_token=False,
        initializer_range=arch.vision_init_std))
    with torch.no_grad():  # visible layer scales (init 0.1) so the tower does more than pass patches through
        for name, p in vit.named_parameters():
            if "lambda" in name:
                p.fill_(1.0)
        # transformers initialises these to zero; InternViT to randn, which gives every token its position
        vit.embeddings.position_embeddings.normal_(0.0, arch.vision_position_std)
        vit.embeddings.cls_token.normal_(0.0, arch.vision_position_std)
    llm = Qwen2ForCausalLM(Qwen2Config(**arch.llm_config(), vocab_size=vocab, initializer_range=arch.llm_init_std))
    projector = nn.Sequential(nn.Linear(arch.vision_hidden * 4, arch.llm_hidden), nn.GELU(),
                              nn.Linear(arch.llm_hidden, arch.llm_hidden))
    return vit, projector, llm


def vision_component(cfg: Any, arch: Architecture, tower: Any) -> Any:
    """The run config's vision component, built without a checkpoint at ``arch``'s sizes, holding ``tower``'s
    weights (so its ``checkpoint_state()`` names them as the bundle stores them)."""
    from omegaconf import OmegaConf

    from vita_framework.plugin_manager import get_plugins
    from vita_framework.registry import BuildContext

    node = OmegaConf.to_container(cfg.vision, resolve=True)
    node["arch"] = arch.vision_config()
    with warnings.catch_warnings():  # "RANDOM weights": replaced by the tower's below
        warnings.simplefilter("ignore")
        component = get_plugins().registry.build("vision", node, BuildContext(dtype="float32", device="cpu"))
    component.model.load_state_dict(tower.state_dict())
    return component


def write_random_bundle(out: Path, tokenizer_dir: Path, arch: Architecture, vocab_size: int, seed: int,
                        info: dict[str, Any]) -> tuple[int, int]:
    """Train the tokenizer into ``tokenizer_dir`` and write an untrained bundle of ``arch`` to ``out`` (the
    trainer's starting point and ``scripts/build_default_bundle.py --random``); returns (tokens, bytes)."""
    from vita_framework.config import compose

    from . import synthetic

    n_tokens = build_tokenizer(tokenizer_dir, tokenizer_corpus(synthetic.corpus()), vocab_size)
    vit, projector, llm = random_modules(arch, n_tokens, seed)
    cfg = compose(run_overrides("null", seed=seed))
    prefixes = weight_prefixes(cfg)
    # the projector and the LLM are the very modules their components wrap (nn.Sequential, a transformers
    # causal LM), so their state_dict() is what the components' checkpoint_state() gives
    tensors = {**component_tensors({"vision": vision_component(cfg, arch, vit)}, prefixes),
               **{prefixes["projector"] + k: v for k, v in projector.state_dict().items()},
               **llm.state_dict()}
    size = write_bundle(out, arch=arch, tensors=tensors, tokenizer_dir=tokenizer_dir, info=info)
    return n_tokens, size


def write_bundle(out: Path, *, arch: Architecture, tensors: dict[str, Any], tokenizer_dir: Path,
                 info: dict[str, Any], repetition_penalty: float = 1.05, pad_to_square: bool = False) -> int:
    """Write a bundle the loader reads back unchanged; returns its size in bytes.

    ``tensors`` are the bundle's tensors by full name (:func:`component_tensors`), of a model of ``arch``;
    ``tokenizer_dir`` holds the tokenizer files; ``pad_to_square``: the tower was trained on images padded to a
    square, so its ``preprocessor_config.json`` asks the loader to pad too. The embedding rows are padded to a
    multiple of 64 as real checkpoints are (the loader shrinks them to the tokenizer's length again).
    """
    import torch
    from safetensors.torch import save_file

    out = Path(out)
    staging = out.with_name(out.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    (staging / VISION_DIR).mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (Path(tokenizer_dir) / name).is_file():
            shutil.copy2(Path(tokenizer_dir) / name, staging / name)
    special = {t["content"]: t["id"] for t in json.loads((staging / "tokenizer.json").read_text())["added_tokens"]}
    n_tokens = max(special.values()) + 1

    vit_cfg, llm_cfg = arch.vision_config(), arch.llm_config()
    padded_vocab = (n_tokens + 63) // 64 * 64
    saved = {}
    for key, value in tensors.items():
        if "rotary" in key:
            continue
        if key in ("model.embed_tokens.weight", "lm_head.weight"):
            value = torch.cat([value[:n_tokens], value.new_zeros(padded_vocab - min(n_tokens, value.shape[0]),
                                                                 value.shape[1])])
        saved[key] = value
    save_file({k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in sorted(saved.items())},
              str(staging / "model.safetensors"), metadata={"format": "pt"})

    config = {
        "architectures": ["VITAQwen2ForCausalLM"], "model_type": "vita-Qwen2", **llm_cfg,
        "vocab_size": padded_vocab, "bos_token_id": special["<|endoftext|>"], "eos_token_id": special["<|im_end|>"],
        "mm_vision_tower": VISION_DIR, "mm_hidden_size": vit_cfg["hidden_size"] * 4,
        "mm_projector_type": "mlp2x_gelu", "image_aspect_ratio": "square", "tokenizer_model_max_length": 6200,
        "tokenizer_padding_side": "left", "torch_dtype": "float32", "use_cache": True,
    }
    _write_json(staging / "config.json", config)
    _write_json(staging / "generation_config.json", {
        "eos_token_id": [special["<|im_end|>"], special["<|endoftext|>"]], "pad_token_id": special["<|endoftext|>"],
        "repetition_penalty": repetition_penalty, "do_sample": False})
    _write_json(staging / VISION_DIR / "config.json", {
        "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", **vit_cfg, "hidden_act": "gelu",
        "qkv_bias": True, "qk_normalization": False, "norm_type": "layer_norm", "num_channels": 3})
    side = vit_cfg["image_size"]
    _write_json(staging / VISION_DIR / "preprocessor_config.json", {
        "crop_size": side, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": side,
        "max_patches": TILES_PER_IMAGE, **({"pad_to_square": True} if pad_to_square else {})})
    _write_json(staging / "bundle_info.json", {**info, "tokenizer_vocab": n_tokens})
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")
