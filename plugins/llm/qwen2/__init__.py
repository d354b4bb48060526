"""Qwen2 LLM backbone: transformers ``Qwen2ForCausalLM`` + its tokenizer, loaded from a VITA bundle."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vita_framework.arch import TransformerArch
from vita_framework.hookspecs import hookimpl
from vita_framework.quantization import check_mode


@dataclass
class Qwen2Arch(TransformerArch):
    num_key_value_heads: int = 2
    vocab_size: int | None = None
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False


@dataclass
class Qwen2Options:
    attn_implementation: str = "sdpa"
    device_map: str | None = None
    max_memory: dict[Any, Any] | None = None  # with device_map=auto: {0: 20GiB, 1: 20GiB, cpu: 64GiB}
    quantization: str | None = None  # int8 | int4 (torchao, CPU and CUDA) | bnb_int8 | bnb_nf4 (bitsandbytes, CUDA)
    tokenizer: str | None = None  # tokenizer dir; default: the checkpoint's (or the embedded bundle's)
    arch: Qwen2Arch = field(default_factory=Qwen2Arch)

    def __post_init__(self) -> None:
        check_mode(self.quantization, "llm.quantization")
        if self.tokenizer and not Path(self.tokenizer).expanduser().is_dir():
            raise ValueError(f"llm.tokenizer='{self.tokenizer}' is not a directory; point it at the directory "
                             "holding tokenizer.json / tokenizer_config.json, or drop it to use the checkpoint's")


def build_qwen2(options: Qwen2Options, context: Any) -> Any:
    from vita_framework.causal_lm import CausalLMBackbone

    return CausalLMBackbone.from_options(options, context, arch_name="Qwen2", random_config=vars(options.arch))


@hookimpl
def vita_register_llm_backbones(register):
    register("qwen2", build_qwen2, schema=Qwen2Options,
             description="Qwen2ForCausalLM from the bundle (vocab shrunk to the tokenizer), generate(inputs_embeds)")
