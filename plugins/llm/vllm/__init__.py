"""``llm=vllm``: vLLM generates from the pipeline's fused embeddings (paged attention, continuous batching,
tensor/pipeline parallelism); the encoders, projector and fusion stay plugins running here.

vLLM lives in a venv of its own (``scripts/make-vllm-venv DIR``). The weights come from the same bundle as
``llm=qwen2`` (:mod:`.model_dir` links them); generation options keep the transformers backend's meaning
(:mod:`.backend`); VITA's repetition penalty runs over generated tokens only (:mod:`.logits`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vita_framework.hookspecs import hookimpl

ENGINES = ("auto", "offline", "async")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass
class VLLMOptions:
    arch: str = "Qwen2"                  # the bundle's LLM: Qwen2 (VITA-1.5) or Llama
    tokenizer: str | None = None         # tokenizer dir; default: the checkpoint's
    engine: str = "auto"                 # offline: LLMEngine (CLI, batch); async: AsyncLLM (continuous batching);
                                         # auto: async in a server or the demo, else offline
    tensor_parallel_size: int = 1        # GPUs per model replica within a node
    pipeline_parallel_size: int = 1      # pipeline stages (across nodes with distributed_executor_backend=ray)
    distributed_executor_backend: str | None = None  # null: vLLM's choice; mp (one node) or ray (several)
    gpu_memory_utilization: float = 0.9  # share of each GPU vLLM may take (weights + KV cache)
    max_model_len: int | None = None     # context length; null: the model's max_position_embeddings
    max_num_seqs: int = 256              # requests decoded together at most
    max_num_batched_tokens: int | None = None  # tokens per engine step; null: vLLM's default
    enforce_eager: bool | None = None    # null: true on CPU (no compilation), false on GPU (CUDA graphs)
    cpu_kvcache_space_gib: float | None = None  # KV cache on CPU in GiB (VLLM_CPU_KVCACHE_SPACE); null: vLLM's
    dtype: str | None = None             # vLLM's dtype; null: the run's dtype (float32 on CPU)
    enable_prefix_caching: bool | None = None  # null: vLLM's default
    engine_process: bool | None = None   # vLLM's engine core in its own process; null: vLLM's default (yes)
    seed: int = 0                        # the engine's seed (requests are seeded per call by the run's seed)
    log_level: str | None = "error"      # VLLM_LOGGING_LEVEL unless set in the environment; null: vLLM's
    model_cache: str | None = None       # where the vLLM model directory is prepared; null: the user cache
    engine_args: dict[str, Any] = field(default_factory=dict)  # more vllm EngineArgs, passed as they are

    def __post_init__(self) -> None:
        problems = []
        if self.engine not in ENGINES:
            problems.append(f"llm.engine must be one of {', '.join(ENGINES)}; got {self.engine!r}")
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "max_num_seqs"):
            if getattr(self, name) < 1:
                problems.append(f"llm.{name} must be >= 1; got {getattr(self, name)}")
        if not 0 < self.gpu_memory_utilization <= 1:
            problems.append(f"llm.gpu_memory_utilization must be in (0, 1]; got {self.gpu_memory_utilization}")
        if self.max_model_len is not None and self.max_model_len < 1:
            problems.append(f"llm.max_model_len must be >= 1; got {self.max_model_len}")
        if self.cpu_kvcache_space_gib is not None and self.cpu_kvcache_space_gib <= 0:
            problems.append(f"llm.cpu_kvcache_space_gib must be > 0; got {self.cpu_kvcache_space_gib}")
        if self.distributed_executor_backend not in (None, "mp", "ray", "uni", "external_launcher"):
            problems.append("llm.distributed_executor_backend must be mp, ray, uni or external_launcher; got "
                            f"{self.distributed_executor_backend!r}")
        if self.dtype not in (None, "auto", "float32", "float16", "bfloat16"):
            problems.append(f"llm.dtype must be float32, float16 or bfloat16; got {self.dtype!r}")
        if self.log_level is not None and self.log_level.lower() not in LOG_LEVELS:
            problems.append(f"llm.log_level must be one of {', '.join(LOG_LEVELS)}; got {self.log_level!r}")
        if self.tokenizer and not Path(self.tokenizer).expanduser().is_dir():
            problems.append(f"llm.tokenizer='{self.tokenizer}' is not a directory")
        if problems:
            raise ValueError("; ".join(problems))
        if self.dtype == "auto":
            self.dtype = None


def build_vllm(options: VLLMOptions, context: Any) -> Any:
    import dataclasses

    from .build import build_vllm_backbone

    if options.engine == "auto":  # a server hands vLLM each request as it comes (continuous batching)
        options = dataclasses.replace(options, engine="async" if getattr(context, "serving", False) else "offline")

    return build_vllm_backbone(options, context)


@hookimpl
def vita_register_llm_backbones(register):
    register("vllm", build_vllm, schema=VLLMOptions,
             description="vLLM from the bundle's LLM tensors, generating from prompt_embeds (own venv: "
                         "scripts/make-vllm-venv)")
