"""Visual-token reduction fusions (avgpool, visionzip, fastv) on the real embedded bundle and its tiny Qwen2.

What is checked: the selection math; planned tokens equal produced tokens; keep=1.0 gives exactly the unreduced
answer ids; FastV's physical pruning equals the same prefill with the pruned keys masked out of layers K..;
the pruning hooks with nothing pruned equal the plain path; batch rows equal the same requests alone, and
streaming equals generate; tokens_in reports the reduced count (also in a sweep's result.json); bad keep values
and an attention implementation that cannot score are refused before anything is encoded.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, build_cached
from vita_framework.contracts import PrefillPruning
from vita_framework.errors import ConfigError
from vita_framework.request import Request
from vita_framework.token_reduction import average_pool, kept_count, pooled_grid, visionzip
from vita_training import synthetic

BASE = ("+vision=internvit", "+audio=none", "device=cpu", "dtype=float32")
METHODS = ("avgpool", "visionzip", "fastv")


def pipeline(fusion: str = "splice", *extra: str):
    return build_cached(*BASE, f"fusion={fusion}", *extra)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Three held-out questions of different prompt lengths, and a 448 px scene (2 x 2 tiles + thumbnail)."""
    root = tmp_path_factory.mktemp("scenes")
    requests = []
    for example in synthetic.examples("heldout", 3):
        path = root / f"{example.index}.png"
        example.image().save(path)
        requests.append(Request(example.question, images=[str(path)], id=example.index))
    big = root / "big.png"
    synthetic.example("heldout", 7).image(448).save(big)
    return requests, str(big)


# -- selection math -----------------------------------------------------------------------------------------
def test_counts_and_grids():
    assert [kept_count(49, k) for k in (1.0, 0.5, 0.25, 0.01)] == [49, 25, 12, 1]
    assert [pooled_grid(49, k) for k in (1.0, 0.5, 0.25)] == [(7, 7), (5, 5), (4, 3)]
    assert pooled_grid(256, 0.25) == (8, 8)
    x = torch.arange(16 * 3, dtype=torch.float32).reshape(16, 3)
    pooled = average_pool(x, 0.25)  # 4x4 -> 2x2: each output is the mean of a 2x2 block
    assert torch.equal(pooled[0], x[[0, 1, 4, 5]].mean(0)) and torch.equal(pooled[3], x[[10, 11, 14, 15]].mean(0))
    assert average_pool(x, 1.0) is x


def test_visionzip_keeps_dominant_rows_and_merges_the_rest():
    torch.manual_seed(0)
    x = torch.randn(49, 8) * 0.01
    dominant = [3, 20, 40]
    rest = [i for i in range(49) if i not in dominant]
    x[rest[:23], 0] += 1.0  # two clusters of ordinary rows; the evenly spread targets fall one in each
    x[rest[23:], 0] -= 1.0
    x[dominant, 1] += 5.0  # three rows far from the mean: the dominant ones
    out = visionzip(x, keep=5 / 49, dominant=0.6)  # 5 kept: 3 dominant + 2 contextual
    expected = {
        dominant[0]: x[3],
        dominant[1]: x[20],
        dominant[2]: x[40],
        rest[0]: x[rest[:23]].mean(0),
        rest[23]: x[rest[23:]].mean(0),
    }
    assert out.shape == (5, 8)
    for got, index in zip(out, sorted(expected)):  # raster order: a contextual row sits where its target was
        assert torch.allclose(got, expected[index], atol=1e-6), index
    assert visionzip(x, 1.0, 0.84) is x


@pytest.mark.parametrize("fusion", METHODS)
def test_planned_tokens_equal_produced_tokens(fusion, scenes):
    _, big = scenes
    pipe = pipeline(fusion, "fusion.keep=0.25", "vision.max_tiles=6")
    prepared = pipe.prepare(Request("What shape is red?", images=[big]))
    rows = [int(f.shape[0]) for f in prepared.features["image"]]
    planned = pipe.fusion.reduced_tokens("image", [49] * 5, [0] * 5)
    assert rows == planned  # the prompt was sized (and budget-checked) with exactly what reduce produced
    assert prepared.input_ids.count(pipe.placeholder_ids["image"]) == sum(planned)
    reported = 5 * (12 if fusion == "avgpool" else kept_count(49, 0.25))
    assert prepared.tokens["image"] == reported and prepared.tokens["total"] == len(prepared.input_ids)


def test_avgpool_refuses_a_non_square_grid_before_encoding():
    with pytest.raises(ConfigError, match=r"square grid .* 50 tokens.*fusion=visionzip"):
        pipeline("avgpool", "fusion.keep=0.5").fusion.reduced_tokens("image", [50], [0])


# -- answers --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", METHODS)
def test_keep_one_gives_exactly_the_unreduced_answer_ids(fusion, scenes):
    requests, _ = scenes
    plain = pipeline().generate_batch(requests, batch_size=3, max_new_tokens=12).rows
    same = pipeline(fusion, "fusion.keep=1.0").generate_batch(requests, batch_size=3, max_new_tokens=12).rows
    assert [r.generated_ids for r in same] == [r.generated_ids for r in plain]
    assert [r.tokens_in for r in same] == [r.tokens_in for r in plain]


@pytest.mark.parametrize("fusion", METHODS)
def test_reduced_batches_equal_single_requests_and_streaming(fusion, scenes):
    requests, _ = scenes
    pipe = pipeline(fusion, "fusion.keep=0.25")
    mixed = [*requests, Request("How many shapes are there?")]  # a text-only row among image rows
    batch = pipe.generate_batch(mixed, batch_size=4, max_new_tokens=12).rows
    alone = [pipe.generate(r, max_new_tokens=12).rows[0] for r in mixed]
    assert [r.generated_ids for r in batch] == [r.generated_ids for r in alone]
    assert [r.tokens_in["image"] for r in batch] == [12, 12, 12, 0]
    *pieces, result = pipe.stream(requests[0], max_new_tokens=12)
    assert "".join(pieces).strip() == alone[0].text and result.rows[0].generated_ids == alone[0].generated_ids


def _fused(pipe, requests):
    """The padded, fused batch exactly as the pipeline hands it to the LLM."""
    prepared = [pipe.prepare(r) for r in requests]
    width = max(len(p.input_ids) for p in prepared)
    ids = torch.zeros(len(prepared), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prepared):
        ids[row, width - len(p.input_ids) :] = torch.tensor(p.input_ids)
        mask[row, width - len(p.input_ids) :] = 1
    features = {s: [f for p in prepared for f in p.features.get(s, [])] for s in pipe.placeholder_ids}
    with torch.inference_mode():
        return pipe.fusion.fuse(ids, mask, pipe.llm.embed, features, pipe.placeholder_ids), ids


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_pruning_hooks_with_nothing_pruned_equal_the_plain_path(attn, scenes):
    requests, _ = scenes
    pipe = pipeline("splice", f"llm.attn_implementation={attn}")
    fused, ids = _fused(pipe, requests)
    config = pipe.llm.generation_config({"max_new_tokens": 10, "output_scores": True})
    plain = pipe.llm.generate(fused, config)
    image = ids == pipe.placeholder_ids["image"]
    fused.pruning = PrefillPruning(image, [int(n) for n in image.sum(1)], layer=1)
    hooked = pipe.llm.generate(fused, config)
    assert torch.equal(hooked.sequences, plain.sequences)
    assert torch.allclose(torch.stack(hooked.scores), torch.stack(plain.scores), atol=1e-4)


def test_fastv_pruning_equals_masking_the_pruned_keys_in_later_layers(scenes):
    """Physical removal after layer K (shorter prefill, original RoPE positions) == the full prefill in which
    layers K.. may not attend to the pruned positions, selected by layer K-1's last-token attention."""
    requests, _ = scenes
    pipe = pipeline("fastv", "fusion.keep=0.25")
    fused, ids = _fused(pipe, requests)
    config = pipe.llm.generation_config({"max_new_tokens": 1, "output_scores": True})
    pruned_logits = pipe.llm.generate(fused, config).scores[0]
    model, mask = pipe.llm.model, fused.attention_mask.bool()
    image = ids == pipe.placeholder_ids["image"]
    eager = dict(vars(model.config))
    model.config._attn_implementation = "eager"
    try:
        with torch.inference_mode():
            attentions = model(
                inputs_embeds=fused.inputs_embeds, attention_mask=fused.attention_mask, output_attentions=True
            ).attentions
    finally:
        model.config._attn_implementation = eager["_attn_implementation_internal"]
    k = pipe.llm.prefill_pruning_layer(fused.pruning.layer)  # FastV's K for this LLM (2 for the 3-layer default)
    scores = attentions[k - 1][:, :, -1, :].mean(1)  # ranked by layer K-1's last-token attention
    dropped = torch.zeros_like(image)
    for row in range(ids.shape[0]):
        candidates = image[row].nonzero().squeeze(1)
        kept = candidates[scores[row, candidates].topk(fused.pruning.keep[row]).indices]
        dropped[row] = image[row]
        dropped[row, kept] = False
    inner, width = model.model, ids.shape[1]
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    with torch.inference_mode():
        hidden = fused.inputs_embeds
        rope = inner.rotary_emb(hidden, positions)
        for index, layer in enumerate(inner.layers):
            keys = mask & ~dropped if index >= k else mask
            allowed = (keys.unsqueeze(1) & causal).unsqueeze(1)
            allowed = allowed | ~allowed.any(-1, keepdim=True)
            hidden = layer(hidden, attention_mask=allowed, position_embeddings=rope, position_ids=positions)
        reference = model.lm_head(inner.norm(hidden))[:, -1]
    assert fused.pruning.keep == [12, 12, 12]
    assert torch.allclose(pruned_logits, reference, atol=1e-4), (pruned_logits - reference).abs().max()


def test_tokens_in_reports_the_reduced_count(scenes):
    requests, _ = scenes
    for fusion, total_extra in (("avgpool", 12), ("visionzip", 12), ("fastv", 49)):
        row = pipeline(fusion, "fusion.keep=0.25").generate(requests[0], max_new_tokens=2).rows[0]
        assert row.tokens_in["image"] == 12
        assert row.tokens_in["total"] == row.tokens_in["text"] + total_extra  # fastv: positions are not removed


# -- bad input ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", ["0", "1.5", "-0.25"])
@pytest.mark.parametrize("fusion", METHODS)
def test_keep_outside_zero_one_is_refused_before_loading(fusion, keep):
    import vita_framework

    with pytest.raises(ConfigError, match=r"fusion\.keep must be in \(0, 1\]"):
        vita_framework.build([*BASE, f"fusion={fusion}", f"fusion.keep={keep}"])


def test_fastv_with_an_attention_that_cannot_score_is_refused_before_encoding():
    import vita_framework

    with pytest.raises(
        ConfigError,
        match=r"llm\.attn_implementation=flex_attention cannot return; set "
        r"llm\.attn_implementation=sdpa",
    ):
        vita_framework.build([*BASE, "fusion=fastv", "llm.attn_implementation=flex_attention"])
    with pytest.raises(ConfigError, match=r"fusion\.layer=3 must be between 1 and 2 for this LLM \(3 layers"):
        vita_framework.build([*BASE, "fusion=fastv", "fusion.layer=3"])


def test_sweep_result_json_carries_the_reduced_visual_count(tmp_path, run_env):
    """The issue's sweep: one result.json per job, tokens_in.image the count the LLM kept, and the eval score."""
    dataset = tmp_path / "qa.jsonl"
    from vita_training.eval_set import write_eval_set

    write_eval_set(tmp_path / "eval", n=4).rename(dataset)
    cmd = [
        sys.executable,
        "-m",
        "vita_framework",
        "-m",
        *BASE[:2],
        "fusion=visionzip,fastv",
        "fusion.keep=1.0,0.25",
        f"eval.dataset={dataset}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=run_env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = {}
    for path in sorted((tmp_path / "sweep").glob("*/result.json")):
        result = json.loads(path.read_text())
        assert result["status"] == "ok" and result["eval"]["n"] == 4
        fusion, keep = result["choices"]["fusion"], [o for o in result["overrides"] if o.startswith("fusion.keep")]
        seen[(fusion, keep[0])] = {row["tokens_in"]["image"] for row in result["rows"]}
    assert seen == {
        ("visionzip", "fusion.keep=1.0"): {49},
        ("visionzip", "fusion.keep=0.25"): {12},
        ("fastv", "fusion.keep=1.0"): {49},
        ("fastv", "fusion.keep=0.25"): {math.floor(49 * 0.25 + 0.5)},
    }
