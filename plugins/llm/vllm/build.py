"""Building the ``llm=vllm`` backbone: checks before any engine starts, the prepared model directory, the
engine arguments."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vita_framework.errors import CheckpointError, ComponentConfigError

from .backend import VLLMBackbone
from .errors import check_head_size, vllm_missing_error


def build_vllm_backbone(options: Any, context: Any) -> VLLMBackbone:
    """Prepare the model directory from the bundle, start vLLM, keep the embedding table here."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise vllm_missing_error()
    from vita_framework.causal_lm import load_tokenizer
    from vita_framework.devices import torch_dtype
    from vita_framework.weights import default_bundle_path

    from .model_dir import ARCHS, prepare_model_dir

    bundle = context.checkpoint
    if bundle is None:
        raise CheckpointError(
            "llm=vllm loads the LLM from a bundle and checkpoint=null gives none; save a random pipeline first "
            "(build it with llm=qwen2 checkpoint=null, then vita_framework.saving.save_bundle) and pass "
            "checkpoint=<that dir>")
    if options.arch not in ARCHS:
        raise ComponentConfigError(f"llm.arch={options.arch!r}: llm=vllm knows {', '.join(ARCHS)}")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")  # vLLM reports usage over the network unless told not to
    if options.log_level:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", options.log_level.upper())
    if options.engine_process is not None:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if options.engine_process else "0"
    tokenizer = load_tokenizer(Path(options.tokenizer) if options.tokenizer else bundle.path or default_bundle_path())
    vocab = len(tokenizer)
    check_head_size(bundle.config, options.arch)
    from vllm.platforms import current_platform

    dtype_name = options.dtype or context.dtype
    exclude = tuple(p for prefixes in context.claims.values() for p in prefixes) + tuple(context.ignored_prefixes)
    model_dir = prepare_model_dir(bundle.path, bundle.config, arch=options.arch, vocab_size=vocab, dtype=dtype_name,
                                  exclude_prefixes=list(exclude),
                                  root=Path(options.model_cache).expanduser() if options.model_cache else None)
    embed = bundle.load("model.embed_tokens.")
    if "weight" not in embed:
        raise CheckpointError(f"'{bundle.path}' has no model.embed_tokens.weight: no LLM in this bundle")
    weight = embed["weight"][:vocab].to(device=context.device, dtype=torch_dtype(context.dtype))
    enforce_eager = options.enforce_eager if options.enforce_eager is not None else current_platform.is_cpu()
    kwargs: dict[str, Any] = {
        "model": str(model_dir), "skip_tokenizer_init": True, "enable_prompt_embeds": True, "dtype": dtype_name,
        "seed": options.seed, "tensor_parallel_size": options.tensor_parallel_size,
        "pipeline_parallel_size": options.pipeline_parallel_size,
        "gpu_memory_utilization": options.gpu_memory_utilization, "max_num_seqs": options.max_num_seqs,
        "enforce_eager": enforce_eager, "logits_processors": ["vita_plugins.llm.vllm.logits:GeneratedTokensPenalty"],
        "logprobs_mode": "processed_logprobs", "max_logprobs": -1, "generation_config": "vllm",
    }
    if options.max_model_len is not None:
        kwargs["max_model_len"] = options.max_model_len
    if options.distributed_executor_backend:
        kwargs["distributed_executor_backend"] = options.distributed_executor_backend
    if options.max_num_batched_tokens is not None:
        kwargs["max_num_batched_tokens"] = options.max_num_batched_tokens
    if options.enable_prefix_caching is not None:
        kwargs["enable_prefix_caching"] = options.enable_prefix_caching
    if options.cpu_kvcache_space_gib is not None and current_platform.is_cpu():
        kwargs["kv_cache_memory_bytes"] = int(options.cpu_kvcache_space_gib * (1 << 30))
    kwargs.update(dict(options.engine_args or {}))
    defaults = dict(bundle.generation_config)
    return VLLMBackbone(tokenizer=tokenizer, embed_weight=weight, model_dir=model_dir, engine_kwargs=kwargs,
                        engine=options.engine, generation_defaults=defaults, bundle=bundle, llm_exclude=exclude,
                        vllm_dtype=torch_dtype(dtype_name))
