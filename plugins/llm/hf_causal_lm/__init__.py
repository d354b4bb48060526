"""Any transformers causal LM as the backbone (Llama, Mistral, Gemma2, Phi3, Qwen2, ...).

From a standard checkpoint directory (``llm.model``), from the bundle's LLM tensors (``checkpoint=``), or,
for experiments, randomly initialised from ``llm.config`` (fields of ``<arch>Config``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vita_framework.hookspecs import hookimpl
from vita_framework.quantization import check_mode


@dataclass
class HFCausalLMOptions:
    arch: str | None = None        # class prefix: Llama -> LlamaForCausalLM; None: from llm.model's config
    model: str | None = None       # a local transformers checkpoint dir (or a hub id in the local cache)
    tokenizer: str | None = None   # default: llm.model's, else the bundle's (or the embedded bundle's)
    attn_implementation: str = "sdpa"
    device_map: str | None = None
    max_memory: dict[Any, Any] | None = None  # with device_map=auto: {0: 20GiB, 1: 20GiB, cpu: 64GiB}
    quantization: str | None = None  # int8 | int4 (torchao, CPU and CUDA) | bnb_int8 | bnb_nf4 (bitsandbytes, CUDA)
    config: dict[str, Any] = field(default_factory=dict)  # random init / bundle: <arch>Config fields

    def __post_init__(self) -> None:
        check_mode(self.quantization, "llm.quantization")
        if self.tokenizer and not Path(self.tokenizer).expanduser().is_dir():
            raise ValueError(f"llm.tokenizer='{self.tokenizer}' is not a directory; point it at the directory "
                             "holding tokenizer.json / tokenizer_config.json, or drop it to use the checkpoint's")


def build_hf_causal_lm(options: HFCausalLMOptions, context: Any) -> Any:
    from vita_framework.causal_lm import CausalLMBackbone

    if options.model:
        return CausalLMBackbone.from_pretrained_dir(options, context)
    return CausalLMBackbone.from_options(options, context, arch_name=options.arch, random_config=options.config)


@hookimpl
def vita_register_llm_backbones(register):
    register("hf_causal_lm", build_hf_causal_lm, schema=HFCausalLMOptions,
             description="any transformers <arch>ForCausalLM: local dir, bundle tensors, or random init")
