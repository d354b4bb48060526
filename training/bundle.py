"""Writing a bundle in the VITA-1.5 layout from in-memory modules, and making its parts (tokenizer, random init).

This lives in the package (not in ``scripts/``) because the trainer writes the embedded default bundle with it;
``scripts/build_default_bundle.py`` is a thin command line over the same functions. The layout is exactly the
one ``vita_framework.weights.Bundle`` and the plugins read for a real VITA-1.5 checkpoint: ``config.json`` with
the ``mm_*`` keys, the InternViT sub-directory with its config and image-processor config, one
``model.safetensors`` with the reference's key names (fused ``qkv``), tokenizer files and
``generation_config.json``; plus ``bundle_info.json`` saying how the weights were made.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VISION_DIR = "InternViT-tiny"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# generic words so that prompts outside the synthetic data still tokenise into whole words
GENERAL_WORDS = [
    "the", "a", "an", "image", "picture", "photo", "shows", "describe", "this", "what", "is", "there", "in", "of",
    "on", "at", "to", "and", "with", "color", "colour", "shape", "small", "large", "big", "middle", "which",
    "answer", "question", "user", "assistant", "system", "hello", "hi", "tell", "me", "story", "please", "you",
    "are", "see", "cat", "dog", "it", "yes", "no",
]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


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


def tokenizer_corpus(extra: list[str]) -> list[str]:
    """Text exactly as it is tokenised: every template rendered around ``extra`` (the dataset's questions and
    answers), cut where ``tokenize_with_placeholders`` cuts (special tokens, markers), plus ``extra`` alone (an
    answer starts its own chunk after ``assistant\n``) and generic words."""
    import re

    from vita_framework.prompt import TEMPLATES, ChatTemplate

    lines = []
    for template in TEMPLATES.values():
        if isinstance(template, ChatTemplate):
            for modality in template.system_by_modality:
                text = template.render("<image>\n" + (extra[0] if extra else ""), modality)
                lines += [c for c in re.split(r"<\|im_start\|>|<\|im_end\|>|<image>|<audio>", text) if c]
    lines += ["system\n", "user\n", "assistant\n", " ".join(GENERAL_WORDS), *(str(n) for n in range(100))]
    lines += [piece for line in extra for piece in (line, "\n" + line)]
    return lines


def build_tokenizer(out: Path, lines: list[str], vocab_size: int = 1000) -> int:
    """A byte-level BPE (Qwen2's split pattern and special tokens) trained on ``lines``; returns its length.

    Byte-level, so any text still tokenises; trained on the prompts it will see, so each word is one token and
    the sequences (and the model) stay small.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL[1:], clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update({"tokenizer_class": "Qwen2Tokenizer", "model_max_length": 131072, "bos_token": None,
                "add_bos_token": False, "add_prefix_space": False, "errors": "replace"})
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return len(fast)


def random_modules(arch: Architecture, vocab: int, seed: int) -> tuple[Any, Any, Any]:
    """Freshly initialised (InternVLVisionModel, mlp2x_gelu projector, Qwen2ForCausalLM) of ``arch``."""
    import torch
    from torch import nn
    from transformers import InternVLVisionConfig, InternVLVisionModel, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    vit = InternVLVisionModel(InternVLVisionConfig(
        hidden_size=arch.vision_hidden, num_hidden_layers=arch.vision_layers, num_attention_heads=arch.vision_heads,
        intermediate_size=arch.vision_intermediate, image_size=arch.image_size, patch_size=arch.patch_size,
        layer_norm_eps=1e-6, hidden_act="gelu", attention_bias=True, use_qk_norm=False, norm_type="layer_norm",
        use_mean_pooling=True, use_absolute_position_embeddings=True, use_mask_token=False,
        initializer_range=arch.vision_init_std))
    with torch.no_grad():  # visible layer scales (init 0.1) so the tower does more than pass patches through
        for name, p in vit.named_parameters():
            if "lambda" in name:
                p.fill_(1.0)
        # transformers initialises these to zero; InternViT to randn, which gives every token its position
        vit.embeddings.position_embeddings.normal_(0.0, arch.vision_position_std)
        vit.embeddings.cls_token.normal_(0.0, arch.vision_position_std)
    llm = Qwen2ForCausalLM(Qwen2Config(
        hidden_size=arch.llm_hidden, intermediate_size=arch.llm_intermediate, num_hidden_layers=arch.llm_layers,
        num_attention_heads=arch.llm_heads, num_key_value_heads=arch.llm_kv_heads, rms_norm_eps=1e-6,
        rope_theta=1e6, max_position_embeddings=32768, tie_word_embeddings=False, hidden_act="silu",
        vocab_size=vocab, initializer_range=arch.llm_init_std))
    projector = nn.Sequential(nn.Linear(arch.vision_hidden * 4, arch.llm_hidden), nn.GELU(),
                              nn.Linear(arch.llm_hidden, arch.llm_hidden))
    return vit, projector, llm


def write_random_bundle(out: Path, tokenizer_dir: Path, arch: Architecture, vocab_size: int, seed: int,
                        info: dict[str, Any]) -> tuple[int, int]:
    """Train the tokenizer into ``tokenizer_dir`` and write an untrained bundle of ``arch`` to ``out`` (the
    trainer's starting point and ``scripts/build_default_bundle.py --random``); returns (tokens, bytes)."""
    from vita_training import synthetic

    n_tokens = build_tokenizer(tokenizer_dir, tokenizer_corpus(synthetic.corpus()), vocab_size)
    vit, projector, llm = random_modules(arch, n_tokens, seed)
    size = write_bundle(out, vision=vit, projector=projector, llm=llm, tokenizer_dir=tokenizer_dir, info=info)
    return n_tokens, size


def vision_reference_state(model: Any) -> dict[str, Any]:
    """transformers InternVLVisionModel names -> the reference InternViT names (fused qkv)."""
    import torch

    sd = model.state_dict()
    out = {
        "embeddings.class_embedding": sd["embeddings.cls_token"],
        "embeddings.position_embedding": sd["embeddings.position_embeddings"],
        "embeddings.patch_embedding.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "embeddings.patch_embedding.bias": sd["embeddings.patch_embeddings.projection.bias"],
    }
    names = {"attention.projection_layer": "attn.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
             "layernorm_before": "norm1", "layernorm_after": "norm2", "lambda_1": "ls1", "lambda_2": "ls2"}
    for i in range(model.config.num_hidden_layers):
        src, dst = f"encoder.layer.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.qkv.{kind}"] = torch.cat(
                [sd[f"{src}attention.{p}_proj.{kind}"] for p in ("q", "k", "v")])
        for hf, ref in names.items():
            for key in [k for k in sd if k.startswith(src + hf)]:
                out[dst + ref + key[len(src + hf):]] = sd[key]
    return out


def _side(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def write_bundle(out: Path, *, vision: Any, projector: Any, llm: Any, tokenizer_dir: Path,
                 info: dict[str, Any], repetition_penalty: float = 1.05) -> int:
    """Write a bundle the loader reads back unchanged; returns its size in bytes.

    ``vision`` is a transformers ``InternVLVisionModel``, ``projector`` the ``nn.Sequential`` of mlp2x_gelu,
    ``llm`` a ``Qwen2ForCausalLM``; ``tokenizer_dir`` holds the tokenizer files. The embedding rows are padded
    to a multiple of 64 as real checkpoints are (the loader shrinks them to the tokenizer's length again).
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

    vcfg, lcfg = vision.config, llm.config
    vit_cfg = dict(hidden_size=vcfg.hidden_size, num_hidden_layers=vcfg.num_hidden_layers,
                   num_attention_heads=vcfg.num_attention_heads, intermediate_size=vcfg.intermediate_size,
                   image_size=_side(vcfg.image_size), patch_size=_side(vcfg.patch_size),
                   layer_norm_eps=vcfg.layer_norm_eps)
    llm_cfg = dict(hidden_size=lcfg.hidden_size, intermediate_size=lcfg.intermediate_size,
                   num_hidden_layers=lcfg.num_hidden_layers, num_attention_heads=lcfg.num_attention_heads,
                   num_key_value_heads=lcfg.num_key_value_heads, rms_norm_eps=lcfg.rms_norm_eps,
                   rope_theta=float(getattr(lcfg, "rope_theta", None) or 1e6),
                   max_position_embeddings=lcfg.max_position_embeddings, tie_word_embeddings=False,
                   hidden_act=lcfg.hidden_act)
    padded_vocab = (n_tokens + 63) // 64 * 64
    tensors = {}
    for key, value in llm.state_dict().items():
        if "rotary" in key:
            continue
        if key in ("model.embed_tokens.weight", "lm_head.weight"):
            value = torch.cat([value[:n_tokens], value.new_zeros(padded_vocab - min(n_tokens, value.shape[0]),
                                                                 value.shape[1])])
        tensors[key] = value
    tensors.update({f"model.vision_tower.vision_tower.{k}": v for k, v in vision_reference_state(vision).items()})
    tensors.update({f"model.mm_projector.{k}": v for k, v in projector.state_dict().items()})
    save_file({k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in sorted(tensors.items())},
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
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": side})
    _write_json(staging / "bundle_info.json", {**info, "tokenizer_vocab": n_tokens})
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")
