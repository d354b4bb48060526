"""Generation options as vLLM ``SamplingParams``, and vLLM's outputs back as tensors (for :mod:`.backend`)."""

from __future__ import annotations

from typing import Any

import torch

from vita_framework.errors import ConfigError

#: GenerationConfig fields vLLM cannot honour, with the value that means "off"
UNSUPPORTED_GENERATION = {
    "num_beams": 1, "num_return_sequences": 1, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
    "top_h": None, "no_repeat_ngram_size": 0, "bad_words_ids": None, "force_words_ids": None,
    "sequence_bias": None, "suppress_tokens": None, "begin_suppress_tokens": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "encoder_repetition_penalty": 1.0, "diversity_penalty": 0.0,
    "exponential_decay_length_penalty": None, "stop_strings": None, "guidance_scale": None, "max_time": None,
    "renormalize_logits": False, "watermarking_config": None, "constraints": None,
}


def sampling_params(config: Any, *, seed: int | None = None, output_scores: bool | None = None,
                    delta: bool = False) -> Any:
    """A ``GenerationConfig`` as vLLM ``SamplingParams`` with the transformers backend's meaning.

    Greedy unless ``do_sample``; when sampling, ``temperature``, ``top_k`` (transformers' 50 when unset,
    0 = off), ``top_p`` and ``min_p``. ``max_new_tokens`` (else ``max_length``: with embeddings transformers
    counts no prompt), ``min_new_tokens``/``min_length``; every eos id and stop token ends a row (the eos
    id is included in the output, as transformers does). ``repetition_penalty`` covers generated tokens only
    (:mod:`.logits`; vLLM's own would also count prompt ids). ``seed`` seeds this request's own generator.
    ``output_scores`` asks for the processed log-probabilities of the whole vocabulary at every step.
    Fields vLLM cannot honour (beam search, typical/epsilon/eta sampling, n-gram bans, ...) are refused.
    """
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError
    from vllm.sampling_params import RequestOutputKind

    from vita_framework.decoding import SAMPLING_DEFAULTS

    from .logits import PENALTY_KEY

    def value(name: str, default: Any = None) -> Any:
        got = getattr(config, name, None)
        return SAMPLING_DEFAULTS.get(name, default) if got is None else got

    refused = [f"generation.{name}={getattr(config, name)!r}" for name, off in UNSUPPORTED_GENERATION.items()
               if getattr(config, name, off) not in (off, None) and getattr(config, name, off) != off]
    if refused:
        raise ConfigError(f"llm=vllm cannot honour {', '.join(refused)}; drop them, or use llm=qwen2 "
                          "(the transformers backend)")
    max_new = config.max_new_tokens if config.max_new_tokens is not None else config.max_length
    min_new = config.min_new_tokens if config.min_new_tokens is not None else (config.min_length or 0)
    eos = config.eos_token_id
    eos = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
    penalty = float(value("repetition_penalty", 1.0))
    if not penalty > 0:
        raise ConfigError(f"generation.repetition_penalty must be > 0; got {penalty!r}")
    if output_scores is None:
        output_scores = bool(getattr(config, "output_scores", False))
    sampling: dict[str, Any] = {"temperature": 0.0}
    if value("do_sample", False):
        top_k = int(value("top_k"))
        sampling = {"temperature": float(value("temperature")), "top_k": top_k if top_k > 0 else 0,
                    "top_p": float(value("top_p")), "min_p": float(value("min_p") or 0.0), "seed": seed}
    try:
        return SamplingParams(
            **sampling, max_tokens=int(max_new), min_tokens=int(min_new), stop_token_ids=eos, ignore_eos=False,
            repetition_penalty=1.0, detokenize=False, skip_special_tokens=False,
            logprobs=-1 if output_scores else None,
            extra_args={PENALTY_KEY: penalty} if penalty != 1.0 else None,
            output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.CUMULATIVE)
    except (ValueError, VLLMValidationError) as exc:  # vLLM's own limits (e.g. temperature <= 2), before the engine
        raise ConfigError(f"llm=vllm refuses these generation options: {exc}") from None


def row_result(out: Any) -> tuple[list[int], list | None, str | None]:
    if out is None:  # aborted before its first token
        return [], None, None
    completion = out.outputs[0]
    return list(completion.token_ids), completion.logprobs, completion.finish_reason


def dense_logprobs(logprobs: Any, vocab: int) -> torch.Tensor:
    """vLLM's per-step ``{token id: Logprob}`` (the whole vocabulary) as a ``[steps, vocab]`` tensor."""
    dense = torch.full((len(logprobs), vocab), float("-inf"))
    for step, entries in enumerate(logprobs):
        ids = torch.tensor(list(entries.keys()), dtype=torch.long)
        values = torch.tensor([entry.logprob for entry in entries.values()], dtype=torch.float32)
        keep = ids < vocab
        dense[step, ids[keep]] = values[keep]
    return dense
