"""The trained bundle's tokenizer: a byte-level BPE trained on the very text generation tokenises.

The corpus is every chat template rendered around the dataset's questions, laid out and cut exactly as
:mod:`vita_framework.prompt` lays out and cuts a prompt (stream markers from the modality table, and the
tokenizer's special tokens), so each word of a training prompt is one token and the sequences stay short.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

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


def tokenizer_corpus(extra: list[str]) -> list[str]:
    """Text exactly as it is tokenised: every template's system prompts rendered around a one-image user turn
    (laid out by ``layout_user_text``), cut where ``PromptTokens`` and the special tokens cut it, plus ``extra``
    alone (an answer starts its own chunk after ``assistant\\n``) and generic words."""
    from vita_framework.plugin_manager import get_modalities
    from vita_framework.prompt import TEMPLATES, ChatTemplate, layout_user_text

    table = get_modalities()
    user, _ = layout_user_text(extra[0] if extra else "", {"image": [1]}, table)
    cuts = "|".join(re.escape(t) for t in [*SPECIAL[1:], *table.stream_markers().values()])
    lines = []
    for template in TEMPLATES.values():
        if isinstance(template, ChatTemplate):
            for system in template.system_by_modality:
                lines += [c for c in re.split(cuts, template.render(user, system)) if c]
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
