"""Generation through public transformers API: VITA's penalty as a logits processor, per-call seeded sampling."""

from __future__ import annotations

import inspect

import pytest
import torch

from conftest import ROOT, build_cached
from vita_framework.contracts import FusedInputs

SAMPLING = ("+vision=internvit", "+audio=none", "generation=sampling", "device=cpu", "dtype=float32")
# a flat distribution over many tokens for many steps: two independent draws cannot coincide by chance
FLAT = {"temperature": 2.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 24, "min_new_tokens": 24}


@pytest.fixture(scope="module")
def pipe():
    return build_cached(*SAMPLING)


def _ids(pipe, seed, **options):
    return pipe.generate("Say something.", seed=seed, generation={**FLAT, **options}).rows[0].generated_ids


def test_unseeded_sampling_calls_differ(pipe):
    assert _ids(pipe, None) != _ids(pipe, None)


def test_equal_seeds_give_identical_samples_and_scores(pipe):
    first = pipe.generate("Say something.", seed=7, output_scores=True, generation=FLAT)
    second = pipe.generate("Say something.", seed=7, output_scores=True, generation=FLAT)
    assert first.rows[0].generated_ids == second.rows[0].generated_ids
    assert torch.equal(first.scores, second.scores)
    assert _ids(pipe, 7) != _ids(pipe, 8)


def test_sampling_never_touches_the_global_rng(pipe):
    initial, state = torch.initial_seed(), torch.get_rng_state()
    _ids(pipe, 3)
    _ids(pipe, None)
    assert torch.initial_seed() == initial
    assert torch.equal(torch.get_rng_state(), state)


def test_sampled_scores_are_the_warped_scores(pipe):
    """output_scores while sampling reports what the warpers left (top-k), and the drawn token is among it."""
    result = pipe.generate("Say something.", seed=1, output_scores=True,
                           generation={"top_k": 5, "top_p": 1.0, "max_new_tokens": 8, "min_new_tokens": 8})
    scores = result.scores[0]  # [steps, vocab]
    finite = torch.isfinite(scores)
    assert (finite.sum(-1) <= 5).all() and (finite.sum(-1) >= 1).all()
    drawn = torch.tensor(result.rows[0].generated_ids[: scores.shape[0]])
    assert finite[torch.arange(len(drawn)), drawn].all()


def _hand_penalty(scores: torch.Tensor, seen: list[int], penalty: float) -> torch.Tensor:
    out = scores.clone()
    for token in set(seen):
        value = scores[token]
        out[token] = value * penalty if value < 0 else value / penalty
    return out


def test_penalty_processor_matches_a_hand_computation_on_every_row():
    from transformers import RepetitionPenaltyLogitsProcessor

    from vita_framework.decoding import GeneratedTokensRepetitionPenalty

    scores = torch.randn(3, 11, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[4, 2, 4], [0, 10, 9], [7, 7, 7]])
    out = GeneratedTokensRepetitionPenalty(1.3)(ids, scores.clone())
    for row in range(3):
        assert torch.equal(out[row], _hand_penalty(scores[row], ids[row].tolist(), 1.3))
    assert torch.equal(out, RepetitionPenaltyLogitsProcessor(1.3)(ids, scores.clone()))  # same ops, bit for bit


def test_left_padded_batch_penalises_every_rows_generated_tokens(pipe):
    """The real model on a left-padded batch: each step's processed scores are its raw logits with the
    penalty applied to exactly the tokens that row generated so far (row 1's padding switches nothing off)."""
    llm = pipe.llm
    batch = llm.tokenizer(["Hello there, how are you today?", "Hi"], return_tensors="pt", padding=True,
                          padding_side="left")
    assert batch["attention_mask"][1, 0] == 0  # row 1 is left-padded
    fused = FusedInputs(llm.embed(batch["input_ids"]), batch["attention_mask"])
    config = llm.generation_config({"do_sample": False, "repetition_penalty": 1.3, "max_new_tokens": 10,
                                    "eos_token_id": [], "output_scores": True, "output_logits": True})
    out = llm.generate(fused, config)
    assert config.repetition_penalty == 1.3  # the caller's config is left as it was
    for step, (scores, logits) in enumerate(zip(out.scores, out.logits, strict=True)):
        for row in range(2):
            seen = out.sequences[row, :step].tolist()
            assert torch.equal(scores[row], _hand_penalty(logits[row], seen, 1.3)), (step, row)
    assert any(not torch.equal(out.scores[s][1], out.logits[s][1]) for s in range(1, 10))  # it did penalise


def test_transformers_builds_no_penalty_or_warper_of_its_own(pipe):
    from transformers import RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper

    from vita_framework.decoding import GeneratedTokensRepetitionPenalty, SeededSampler, decoding_plan

    requested = pipe.llm.generation_config({"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.7,
                                            "top_k": 20, "top_p": 0.8})
    config, processors, sampler = decoding_plan(requested, pipe.llm.model.generation_config, 0, "cpu")
    assert config.repetition_penalty == 1.0 and config.do_sample is False
    assert [type(p).__name__ for p in processors] == [
        "GeneratedTokensRepetitionPenalty", "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper",
        "SeededSampler"]
    assert isinstance(processors[0], GeneratedTokensRepetitionPenalty)
    assert not isinstance(processors[0], RepetitionPenaltyLogitsProcessor)
    assert isinstance(processors[1], TemperatureLogitsWarper) and isinstance(processors[2], TopKLogitsWarper)
    assert processors[-1] is sampler and isinstance(sampler, SeededSampler)
    assert requested.do_sample is True and requested.repetition_penalty == 1.05


def test_rotary_buffers_are_built_by_transformers(pipe):
    from transformers import Qwen2ForCausalLM

    model = pipe.llm.model
    fresh = Qwen2ForCausalLM(model.config).model.rotary_emb
    for name, buffer in model.model.rotary_emb.named_buffers():
        assert not buffer.is_meta
        assert torch.equal(buffer, getattr(fresh, name).to(buffer.dtype)), name


def test_no_private_transformers_api():
    sources = ["vita_framework/causal_lm.py", "vita_framework/decoding.py", "plugins/vision/internvit/model.py",
               "plugins/vision/siglip/model.py"]
    for path in sources:
        text = (ROOT / path).read_text()
        for private in ("._get_logits_processor", "_attn_implementation =", ".prompt_ignore_length",
                        "prompt_ignore_length=", "_rebuild_meta_buffers", "_from_config", "torch.manual_seed"):
            assert private not in text, f"{path} uses {private}"
    from vita_framework.causal_lm import CausalLMBackbone

    body = inspect.getsource(CausalLMBackbone.generate)
    assert "catch_warnings" not in body and "manual_seed" not in body and "fork_rng" not in body
