"""The model classes vLLM runs for ``llm=vllm``: its own Qwen2 / Llama reading a VITA bundle's LLM share.

A VITA bundle holds every component's tensors in one file set, and its embedding rows may exceed the
tokenizer (the reference resizes the LLM to ``len(tokenizer)``). The prepared model directory
(:mod:`vita_plugins.llm.vllm.model_dir`) links the bundle's files and says in ``config.json`` which prefixes
belong to other components (``vita_exclude_prefixes``); these classes skip those tensors and keep the first
``vocab_size`` rows of the embedding and the head, so nothing is converted or copied.

vLLM loads this module in each of its processes through the ``vllm.general_plugins`` entry point
(:func:`register`), so spawned engine and worker processes (tensor/pipeline parallel, Ray) know the classes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

#: architecture name in the prepared config.json -> (vLLM module, vLLM class it extends)
ARCHITECTURES = {
    "VitaQwen2ForCausalLM": ("vllm.model_executor.models.qwen2", "Qwen2ForCausalLM"),
    "VitaLlamaForCausalLM": ("vllm.model_executor.models.llama", "LlamaForCausalLM"),
}
VOCAB_ROWS = ("model.embed_tokens.weight", "lm_head.weight")


def llm_share(weights: Iterable[tuple[str, Any]], config: Any) -> Iterator[tuple[str, Any]]:
    """The bundle's tensors that belong to the LLM, embedding rows cut to the config's vocab_size."""
    exclude = tuple(getattr(config, "vita_exclude_prefixes", None) or ())
    vocab = int(config.vocab_size)
    for name, tensor in weights:
        if exclude and name.startswith(exclude):
            continue
        if name in VOCAB_ROWS and tensor.shape[0] > vocab:
            tensor = tensor[:vocab]
        yield name, tensor


def _make(name: str) -> type:
    import importlib

    module, base_name = ARCHITECTURES[name]
    base = getattr(importlib.import_module(module), base_name)

    def load_weights(self: Any, weights: Iterable[tuple[str, Any]]) -> set[str]:
        return base.load_weights(self, llm_share(weights, self.config))

    return type(name, (base,), {"load_weights": load_weights, "__module__": __name__,
                                "__doc__": f"vLLM's {base_name} reading the LLM share of a VITA bundle."})


def __getattr__(name: str) -> Any:  # the classes are made on first use: importing vLLM's models is slow
    if name in ARCHITECTURES:
        cls = _make(name)
        globals()[name] = cls
        return cls
    raise AttributeError(name)


def register() -> None:
    """``vllm.general_plugins`` entry point: make the architectures known to vLLM's model registry."""
    from vllm import ModelRegistry

    supported = set(ModelRegistry.get_supported_archs())
    for name in ARCHITECTURES:
        if name not in supported:
            ModelRegistry.register_model(name, f"{__name__}:{name}")
