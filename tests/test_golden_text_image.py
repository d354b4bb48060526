"""Parity with the VITA-1.5 reference on golden cases 1 (text) and 2 (one image, 5 tiles)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import GOLDEN, GOLDEN_CKPT, build_cached, golden_tensors
from vita_framework.request import Request

VITA15 = ("+experiment=vita15", f"checkpoint={GOLDEN_CKPT}", "dtype=float32", "device=cpu",
          "vision.attn_implementation=eager", "generation.max_new_tokens=20")


@pytest.fixture(scope="module")
def pipeline():
    return build_cached(*VITA15)


def _embeds(pipeline, request):
    prepared = pipeline.prepare(request)
    ids, features = prepared.input_ids, prepared.features
    ids_t = torch.tensor([ids])
    fused = pipeline.fusion.fuse(ids_t, torch.ones_like(ids_t), pipeline.llm.embed, features, pipeline.placeholder_ids)
    return ids, features, fused.inputs_embeds


def test_checkpoint_loads_with_vocab_shrunk_to_tokenizer(pipeline):
    assert len(pipeline.llm.tokenizer) == 403
    assert pipeline.llm.model.get_input_embeddings().weight.shape == (403, 64)
    assert pipeline.llm.model.lm_head.weight.shape == (403, 64)
    assert pipeline.vision.hidden_size == 256 and pipeline.vision.tokens_per_tile == 256


def test_case1_text_only_matches_reference(pipeline):
    gold = golden_tensors("case1_text")
    meta = json.loads((GOLDEN / "case1_text" / "meta.json").read_text())
    ids, _, embeds = _embeds(pipeline, Request(meta["question"]))
    assert ids == gold["input_ids"][0].tolist()
    assert torch.allclose(embeds[0], gold["inputs_embeds"][0], atol=1e-5, rtol=0)
    result = pipeline.generate(meta["question"], output_scores=True)
    assert result.rows[0].generated_ids == gold["generated_ids_demo"][0].tolist()
    assert result.scores.shape == gold["scores_demo"].shape
    assert (result.scores - gold["scores_demo"]).abs().max() < 1e-4


def test_case2_image_path_matches_reference(pipeline):
    gold = golden_tensors("case2_image5")
    meta = json.loads((GOLDEN / "case2_image5" / "meta.json").read_text())
    source = GOLDEN / "case2_image5" / "source.png"
    from vita_framework.media.image import load_image

    batch = pipeline.vision.preprocess([load_image(source)])
    assert batch.tiles_per_item == [5]
    tower = torch.stack(pipeline.vision.encode(batch))
    assert (tower - gold["vision_tower_out"]).abs().max() <= 1e-5
    _ids, features, embeds = _embeds(pipeline, Request(meta["question"], images=[source]))
    assert len(features["image"]) == 5
    assert (torch.stack(features["image"]) - gold["image_features"]).abs().max() <= 1e-5
    assert embeds.shape == gold["inputs_embeds"].shape == (1, 1538, 64)
    assert (embeds - gold["inputs_embeds"]).abs().max() <= 1e-5
    result = pipeline.generate(meta["question"], images=[source], output_scores=True)
    assert result.rows[0].generated_ids == gold["generated_ids_demo"][0].tolist()
    assert (result.scores - gold["scores_demo"]).abs().max() < 1e-4
    assert result.rows[0].tokens_in == {"image": 1280, "audio": 0, "video": 0, "text": 258, "total": 1538}


def test_plain_greedy_matches_reference_without_penalty_or_stop(pipeline):
    gold = golden_tensors("case1_text")
    meta = json.loads((GOLDEN / "case1_text" / "meta.json").read_text())
    result = pipeline.generate(meta["question"], output_scores=True, repetition_penalty=1.0, stop_tokens=[])
    assert result.rows[0].generated_ids == gold["generated_ids_plain"][0].tolist()
    assert (result.scores - gold["scores_plain"]).abs().max() < 1e-4
