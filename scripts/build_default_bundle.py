"""Build the embedded default bundle (tiny, random weights) and the sample image, reproducibly.

    python scripts/build_default_bundle.py [--out vita_framework/assets/default_bundle] [--seed 0]

The bundle uses the VITA-1.5 layout exactly (config.json with mm_* keys, InternViT sub-directory with its
config and image-processor config, one model.safetensors with the reference's key names, tokenizer files,
generation_config.json), so the loader that reads a real VITA-1.5 checkpoint reads this one too.
The tokenizer is a byte-level BPE trained here with `tokenizers` and Qwen2's special tokens.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "vita_framework" / "assets"
VISION_DIR = "InternViT-tiny"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS_WORDS = [
    "the", "a", "an", "image", "picture", "photo", "shows", "describe", "this", "what", "is", "there", "in",
    "of", "on", "at", "to", "and", "with", "color", "colour", "shape", "circle", "square", "triangle", "star",
    "red", "green", "blue", "yellow", "white", "black", "orange", "purple", "small", "large", "big", "left",
    "right", "top", "bottom", "center", "middle", "one", "two", "three", "how", "many", "where", "which",
    "answer", "question", "user", "assistant", "system", "robot", "VITA", "you", "are", "helpful", "honest",
    "harmless", "language", "model", "multimodal", "video", "audio", "see", "seeing", "content", "given",
    "strictly", "forbidden", "please", "note", "not", "apologize", "discuss", "correct", "wrong", "languages",
    "choice", "community", "open", "source", "develop",
]


def corpus() -> list[str]:
    from vita_framework.prompt import TEMPLATES

    lines = list(TEMPLATES["qwen2p5_instruct"].system_by_modality.values())
    words = CORPUS_WORDS
    for i, w in enumerate(words):
        lines.append(f"{w} {words[(i * 7 + 3) % len(words)]} {words[(i * 13 + 5) % len(words)]}.")
        lines.append(f"What {w} is in the image? It is a {words[(i * 3 + 1) % len(words)]} {w}.")
    lines += [str(n) for n in range(100)] + ["Describe this image.", "How many shapes are there?"]
    return lines


def build_tokenizer(out: Path, vocab_size: int) -> int:
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
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL[1:], clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update({"tokenizer_class": "Qwen2Tokenizer", "model_max_length": 131072, "bos_token": None,
                "add_bos_token": False, "add_prefix_space": False, "errors": "replace"})
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return len(fast)


def vision_reference_state(model, hidden: int) -> dict:
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


def sample_image(path: Path) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (448, 448), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.ellipse((60, 80, 200, 220), fill=(220, 30, 30))
    draw.rectangle((250, 240, 390, 380), fill=(30, 80, 220))
    draw.polygon([(120, 400), (200, 260), (280, 400)], fill=(40, 170, 60))
    img.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ASSETS / "default_bundle")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab", type=int, default=1000)
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file
    from torch import nn
    from transformers import InternVLVisionConfig, InternVLVisionModel, Qwen2Config, Qwen2ForCausalLM

    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    (out / VISION_DIR).mkdir(parents=True)
    n_tokens = build_tokenizer(out, args.vocab)
    padded_vocab = (n_tokens + 63) // 64 * 64  # as real checkpoints: embedding rows beyond the tokenizer

    torch.manual_seed(args.seed)
    vit_cfg = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                   image_size=448, patch_size=14, layer_norm_eps=1e-6)
    vit = InternVLVisionModel(InternVLVisionConfig(
        **vit_cfg, hidden_act="gelu", attention_bias=True, use_qk_norm=False, norm_type="layer_norm",
        use_mean_pooling=True, use_absolute_position_embeddings=True, use_mask_token=False))
    with torch.no_grad():  # visible layer scales (init 0.1) so the tower does more than pass patches through
        for name, p in vit.named_parameters():
            if "lambda" in name:
                p.fill_(1.0)
    llm_cfg = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=32768,
                   tie_word_embeddings=False, hidden_act="silu")
    llm = Qwen2ForCausalLM(Qwen2Config(**llm_cfg, vocab_size=padded_vocab))
    mm_hidden = vit_cfg["hidden_size"] * 4
    projector = nn.Sequential(nn.Linear(mm_hidden, 64), nn.GELU(), nn.Linear(64, 64))

    tensors = {k: v for k, v in llm.state_dict().items() if "rotary" not in k}
    tensors.update({f"model.vision_tower.vision_tower.{k}": v
                    for k, v in vision_reference_state(vit, vit_cfg["hidden_size"]).items()})
    tensors.update({f"model.mm_projector.{k}": v for k, v in projector.state_dict().items()})
    save_file({k: v.contiguous().clone() for k, v in sorted(tensors.items())}, str(out / "model.safetensors"),
              metadata={"format": "pt"})

    tok = json.loads((out / "tokenizer_config.json").read_text())
    ids = json.loads((out / "tokenizer.json").read_text())["added_tokens"]
    special = {t["content"]: t["id"] for t in ids}
    config = {
        "architectures": ["VITAQwen2ForCausalLM"], "model_type": "vita-Qwen2", **llm_cfg,
        "vocab_size": padded_vocab, "bos_token_id": special["<|endoftext|>"], "eos_token_id": special["<|im_end|>"],
        "mm_vision_tower": VISION_DIR, "mm_hidden_size": mm_hidden, "mm_projector_type": "mlp2x_gelu",
        "image_aspect_ratio": "square", "tokenizer_model_max_length": 6200, "tokenizer_padding_side": "left",
        "torch_dtype": "float32", "use_cache": True,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps({
        "eos_token_id": [special["<|im_end|>"], special["<|endoftext|>"]], "pad_token_id": special["<|endoftext|>"],
        "repetition_penalty": 1.05, "do_sample": False}, indent=2))
    (out / VISION_DIR / "config.json").write_text(json.dumps({
        "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", **vit_cfg, "hidden_act": "gelu",
        "qkv_bias": True, "qk_normalization": False, "norm_type": "layer_norm", "num_channels": 3}, indent=2))
    (out / VISION_DIR / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": 448, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": 448},
        indent=2))
    (out / "bundle_info.json").write_text(json.dumps({
        "weights": "random", "seed": args.seed, "built_by": "scripts/build_default_bundle.py",
        "tokenizer_vocab": n_tokens, "note": "untrained: answers are noise"}, indent=2))
    del tok
    sample_image(ASSETS / "sample.png")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 1e6:.2f} MB, {n_tokens} tokens) and {ASSETS / 'sample.png'}")


if __name__ == "__main__":
    main()
