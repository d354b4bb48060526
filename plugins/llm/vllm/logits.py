"""VITA's repetition penalty inside vLLM: over each request's generated tokens only.

vLLM's own ``repetition_penalty`` also covers the prompt's token ids. A prompt given as embeddings has none
(vLLM fills them with 0, so token 0 would be penalised, and vLLM issue #57719 reports a crash for embeddings
plus any penalty), whereas the reference, like transformers generating from ``inputs_embeds``, penalises every
generated token and nothing else. This processor does exactly that, with the same operations as
:class:`vita_framework.decoding.GeneratedTokensRepetitionPenalty` (a seen token's score divided by the
penalty, or multiplied when negative, once per distinct token).

A request asks for it with ``SamplingParams(extra_args={"vita_repetition_penalty": 1.05})``. The engine loads the
class by name (``logits_processors=["vita_plugins.llm.vllm.logits:GeneratedTokensPenalty"]``), in whichever
process runs the sampler. It is not argmax-invariant, so vLLM applies it before greedy selection, and the
processed logprobs (``logprobs_mode="processed_logprobs"``) include it, as transformers' processed scores do.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

#: the SamplingParams.extra_args key
PENALTY_KEY = "vita_repetition_penalty"
#: how the engine names this class (``logits_processors=[...]``)
FQCN = "vita_plugins.llm.vllm.logits:GeneratedTokensPenalty"


class GeneratedTokensPenalty(LogitsProcessor):
    """Per request: (penalty, the request's running list of generated ids)."""

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        value = (sampling_params.extra_args or {}).get(PENALTY_KEY)
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{PENALTY_KEY} must be a number > 0; got {value!r}")

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.device = device
        self.rows: dict[int, tuple[float, list[int]]] = {}

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def new_state(params: Any, _prompt_ids: Any, output_ids: list[int]) -> tuple[float, list[int]] | None:
            value = (params.extra_args or {}).get(PENALTY_KEY) if params is not None else None
            return None if value is None or float(value) == 1.0 else (float(value), output_ids)

        process_dict_updates(self.rows, batch_update, new_state)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        vocab = logits.shape[-1]
        for row, (penalty, output_ids) in self.rows.items():
            if not output_ids:
                continue
            ids = torch.tensor(sorted({i for i in output_ids if 0 <= i < vocab}), dtype=torch.long,
                               device=logits.device)
            seen = logits[row, ids]
            logits[row, ids] = torch.where(seen < 0, seen * penalty, seen / penalty)
        return logits
