"""How the next token is chosen: VITA's repetition penalty and seeded sampling, as public logits processors.

Heavy (imports torch and transformers at module level): only :mod:`vita_framework.causal_lm` imports it.

Why not transformers' built-ins:

- ``RepetitionPenaltyLogitsProcessor`` is handed each row's left-padding length as ``prompt_ignore_length``,
  assuming ``input_ids`` starts with the prompt. We generate from ``inputs_embeds``, so ``input_ids`` holds only
  new tokens and a padded row's penalty would silently switch off (golden case 5 row 1). The reference, which
  also generated from embeddings, penalised every generated token of every row.
- ``generate`` samples with ``torch.multinomial`` on the global RNG and takes no generator. Seeding it would
  reseed the process (and race with other threads); a per-call ``torch.Generator`` needs our own sampling step.

Two guards run with them: :class:`FiniteLogitsCheck` stops a model whose first scores hold NaN/inf (NaN
weights, float16 overflow) with a :class:`~vita_framework.errors.GenerationError` instead of ``!!!!``, and
:class:`CancelCriteria` ends a generation within one decode step once its ``threading.Event`` is set.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import torch
from transformers import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    LogitNormalization,
    LogitsProcessor,
    LogitsProcessorList,
    MinPLogitsWarper,
    StoppingCriteria,
    TemperatureLogitsWarper,
    TopHLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from .errors import ConfigError, GenerationError

#: sampling knobs at the values transformers' GenerationConfig documents as defaults (each one a no-op except
#: top_k=50, which transformers applies when nothing sets top_k; we keep that so results do not change)
SAMPLING_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0, "top_h": None, "top_k": 50, "top_p": 1.0, "min_p": None, "typical_p": 1.0,
    "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
}


class FiniteLogitsCheck(LogitsProcessor):
    """Raises :class:`GenerationError` naming ``component`` when the first step's scores hold NaN or +inf, or a
    row has no finite score; later steps are not checked (one device sync per call). The LLM puts it before the
    :func:`decoding_plan` processors; transformers' built-ins before it only set -inf or 0, which it allows."""

    def __init__(self, component: str) -> None:
        self.component = component
        self.checked = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.checked:
            self.checked = True
            bad = torch.isnan(scores).any(-1) | torch.isposinf(scores).any(-1) | ~torch.isfinite(scores).any(-1)
            if bool(bad.any()):
                rows = bad.nonzero().flatten().tolist()
                kind = "NaN" if bool(torch.isnan(scores).any()) else "infinite"
                raise GenerationError(
                    f"{self.component} produced {kind} logits at the first generated token (row(s) {rows[:8]}), "
                    "so every token would be garbage. Likely causes: NaN/inf weights in the checkpoint (check "
                    "the LLM's tensors, or the encoders'/projector's whose features it read), or float16 "
                    "overflow: try dtype=float32 or dtype=bfloat16")
        return scores


class CancelCriteria(StoppingCriteria):
    """Stops every row once ``event`` is set: transformers checks it after each decode step, so a generation
    ends within one step of the set (its rows keep the tokens made so far)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class GeneratedTokensRepetitionPenalty(LogitsProcessor):
    """VITA's repetition penalty over every id in ``input_ids`` (only generated ids: we generate from
    ``inputs_embeds``), on every row: scores of seen tokens are divided by ``penalty``, or multiplied when
    negative, once per token. The same tensor operations as transformers' processor, so scores match it bit
    for bit. Its own class, not a ``RepetitionPenaltyLogitsProcessor`` subclass: transformers keeps its
    built-in next to a subclass and would penalise twice."""

    def __init__(self, penalty: float) -> None:
        if not penalty > 0:
            raise ConfigError(f"generation.repetition_penalty must be > 0; got {penalty!r}")
        self.penalty = float(penalty)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        vocab = scores.shape[-1]
        ids = input_ids.clamp(max=vocab)  # ids beyond the head's vocab land in a dropped extra column
        padded = torch.nn.functional.pad(scores, (0, 1))
        seen = torch.gather(padded, 1, ids)
        seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return padded.scatter(1, ids, seen)[..., :vocab]


class SeededSampler(LogitsProcessor):
    """The sampling step, drawing from this call's own ``torch.Generator``; must be the last processor.

    transformers decodes greedily (``do_sample`` off), so the scores we return keep only the drawn token
    finite and its argmax is the draw. With ``seed=None`` the generator takes fresh OS entropy, so repeated
    calls differ; the global torch RNG is neither seeded nor consumed. The warped scores (what transformers
    would report when sampling) are kept in :attr:`scores` when asked for."""

    def __init__(self, seed: int | None, keep_scores: bool) -> None:
        self.seed = seed
        self.scores: list[torch.Tensor] | None = [] if keep_scores else None
        self._generator: torch.Generator | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._generator is None:  # on the scores' device: multinomial needs its generator there
            self._generator = torch.Generator(device=scores.device)
            if self.seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(int(self.seed))
        probs = torch.nn.functional.softmax(scores, dim=-1)
        drawn = torch.multinomial(probs, num_samples=1, generator=self._generator)
        if self.scores is not None:
            self.scores.append(scores)
        return torch.full_like(scores, float("-inf")).scatter_(1, drawn, 0.0)


def decoding_plan(requested: Any, model_defaults: Any, seed: int | None, device: Any
                  ) -> tuple[Any, LogitsProcessorList, SeededSampler | None]:
    """(GenerationConfig for transformers, our processors, the sampler when sampling).

    A knob we leave unset is read, as transformers would, from the model's own ``generation_config``, then
    from transformers' defaults. The config handed on has the penalty at 1.0 and, when sampling, ``do_sample``
    off with the sampling knobs neutral, so transformers builds none of those processors itself (and warns
    about nothing). Ours follow its built-in constraint processors (bans and forced tokens, which set scores
    to -inf or 0, where the penalty changes nothing) and keep its order among themselves: penalty, then
    temperature, top-h, top-k, top-p, min-p, typical, epsilon, eta, renormalisation, then the draw.
    """
    config = copy.deepcopy(requested)  # the caller's config (eos, pad) stays as it was

    def effective(name: str, default: Any = None) -> Any:
        value = getattr(config, name, None)
        if value is None:
            value = getattr(model_defaults, name, None)
        return SAMPLING_DEFAULTS.get(name, default) if value is None else value

    config.return_dict_in_generate = True
    processors = LogitsProcessorList()
    penalty = effective("repetition_penalty", 1.0)
    if penalty != 1.0:
        processors.append(GeneratedTokensRepetitionPenalty(penalty))
    config.repetition_penalty = 1.0
    if not effective("do_sample", False):
        return config, processors, None
    if effective("num_beams", 1) > 1 or effective("num_return_sequences", 1) > 1:
        raise ConfigError("sampling supports num_beams=1 and num_return_sequences=1 only; for several samples "
                          "run the request again with another seed")
    if effective("watermarking_config") is not None:
        raise ConfigError("generation.watermarking_config is not supported with sampling")
    processors.extend(_warpers(effective, renormalize=bool(effective("renormalize_logits", False)), device=device))
    sampler = SeededSampler(seed, keep_scores=bool(effective("output_scores", False)))
    processors.append(sampler)
    config.do_sample = False
    config.renormalize_logits = False
    for name, neutral in SAMPLING_DEFAULTS.items():
        setattr(config, name, neutral)
    return config, processors, sampler


def _warpers(effective: Any, *, renormalize: bool, device: Any) -> list[LogitsProcessor]:
    """The warpers transformers would add for ``do_sample`` with one beam, in its order."""
    warpers: list[LogitsProcessor] = []
    temperature, top_h, top_k = effective("temperature"), effective("top_h"), effective("top_k")
    top_p, min_p, typical_p = effective("top_p"), effective("min_p"), effective("typical_p")
    epsilon, eta = effective("epsilon_cutoff"), effective("eta_cutoff")
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_h is not None:
        warpers.append(TopHLogitsWarper(top_h=top_h))
    if top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    if min_p is not None:
        warpers.append(MinPLogitsWarper(min_p=min_p, min_tokens_to_keep=1))
    if typical_p < 1.0:
        warpers.append(TypicalLogitsWarper(mass=typical_p, min_tokens_to_keep=1))
    if 0.0 < epsilon < 1.0:
        warpers.append(EpsilonLogitsWarper(epsilon=epsilon, min_tokens_to_keep=1))
    if 0.0 < eta < 1.0:
        warpers.append(EtaLogitsWarper(epsilon=eta, min_tokens_to_keep=1, device=device))
    if renormalize:
        warpers.append(LogitNormalization())
    return warpers
