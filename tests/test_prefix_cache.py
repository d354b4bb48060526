"""Shared prompt prefixes (``prefix_cache_mb``): rows prefilled one by one from cached prefix states give the
answers of plain left-padded batches; which prefixes are shared is learnt from the rows; the store stays bounded;
the CLI's batch mode turns both caches on from its config and reports what they saved."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import build_cached
from vita_framework.cli import SAMPLE_IMAGE
from vita_framework.prefix_cache import MIN_PREFIX, PrefixStore, text_head
from vita_framework.request import Request

BASE = ("+vision=internvit", "+audio=none")


@pytest.fixture
def pipe():
    pipe = build_cached(*BASE)
    yield pipe
    pipe.set_prefix_cache(None)


def _requests():
    from vita_training import synthetic

    scenes = synthetic.examples("heldout", 3)
    return ([Request(s.question, images=[s.image(224)]) for s in scenes]
            + [Request("Hi."), Request("What colour is the sky?"), Request("Describe this image.",
                                                                             images=[SAMPLE_IMAGE])]
            + [Request("How many shapes are there?", images=[scenes[0].image(224), scenes[1].image(224)])])


def test_answers_equal_with_and_without_the_prefix_cache(pipe):
    requests = _requests()
    pipe.set_prefix_cache(None)
    plain = pipe.generate_batch(requests, batch_size=4)
    pipe.set_prefix_cache(16)
    cached = pipe.generate_batch(requests, batch_size=4)
    again = pipe.generate_batch(requests, batch_size=3)  # other batch-mates, other padding
    alone = [pipe.generate(r).rows[0].generated_ids for r in requests[:2]]
    expected = [r.generated_ids for r in plain.rows]
    assert [r.generated_ids for r in cached.rows] == expected
    assert [r.generated_ids for r in again.rows] == expected
    assert alone == expected[:2]
    assert [r.tokens_in for r in cached.rows] == [r.tokens_in for r in plain.rows]
    before = pipe.prefix_store.stats()
    assert before["entries"] >= 1 and before["hits"] >= len(requests), before  # shared heads computed once
    third = pipe.generate_batch(requests, batch_size=4)
    assert [r.generated_ids for r in third.rows] == expected
    after = pipe.prefix_store.stats()
    # by now every row's longest shared head is stored: each row of a repeat starts from it, nothing recomputed
    assert after["hits"] - before["hits"] == len(requests) and after["queries"] - before["queries"] == len(requests)
    assert 0 < after["bytes"] <= 16 * 2**20


def test_shared_heads_are_learnt_from_batch_mates_and_recent_rows(pipe):
    tokenizer = pipe.llm.tokenizer
    first = pipe.prepare(Request("Tell me a story.")).input_ids
    second = pipe.prepare(Request("Name a shape.")).input_ids
    imaged = pipe.prepare(Request("Name a shape.", images=[SAMPLE_IMAGE])).input_ids
    common = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
    assert common >= MIN_PREFIX
    store = PrefixStore(4)
    alone = store.plan([text_head(first)])
    assert alone == [()]  # nothing to share with yet
    planned = store.plan([text_head(second)])  # shares the system prompt with the row seen before
    assert planned == [tuple(first[:common])]
    assert "<|im_start|>" in tokenizer.decode(list(planned[0]))
    head = text_head(imaged)  # the text before the image's placeholders
    assert len(head) < len(imaged) and all(t >= 0 for t in head) and imaged[len(head)] < 0
    assert store.plan([head, text_head(first)]) != [(), ()]
    assert store.plan([(1, 2, 3), (1, 2, 4)]) == [(), ()]  # shorter than MIN_PREFIX: not worth an entry
    # a conversation's next turn starts from its earlier turn, not only from the stored system prompt
    system = tuple(first[:common])
    store.put(system, [])
    turn1 = (*system, *range(1000, 1020))
    store.plan([turn1])
    assert store.plan([(*turn1, 7, 8, 9)]) == [turn1]


def test_the_store_stays_within_its_bound():
    import torch

    store = PrefixStore(1)  # 1 MiB
    layer = (torch.zeros(1, 2, 1000, 64), torch.zeros(1, 2, 1000, 64))  # ~1 MB a layer pair
    one = [(layer[0][..., :400, :], layer[1][..., :400, :])]  # 400 KiB
    for i in range(5):
        store.put((i,) * 10, [(k.clone(), v.clone()) for k, v in one])
        assert store.stats()["bytes"] <= 2**20
    assert store.stats()["entries"] == 2 and store.get((0,) * 10) is None and store.get((4,) * 10) is not None
    store.put((9,) * 10, [layer, layer])  # larger than the whole bound: not kept
    assert store.get((9,) * 10) is None


def test_cli_batch_mode_turns_both_caches_on_from_its_config(tmp_path, run_env):
    lines = [{"prompt": "What shapes are in the image?", "images": [str(SAMPLE_IMAGE)]},
             {"prompt": "Describe this image.", "images": [str(SAMPLE_IMAGE)]},
             {"prompt": "Hi."}, {"prompt": "Name a colour."}]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(line) + "\n" for line in lines))

    def run(name, *extra):
        out = tmp_path / name
        cmd = [sys.executable, "-m", "vita_framework", *BASE, f"requests={requests}", "batch_size=2", "device=cpu",
               f"hydra.run.dir={out}", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=run_env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads((out / "result.json").read_text())

    plain = run("plain")
    cached = run("cached", "encoder_cache_mb=32", "prefix_cache_mb=8")
    assert [r["generated_ids"] for r in cached["rows"]] == [r["generated_ids"] for r in plain["rows"]]
    assert "caches" not in plain
    assert cached["caches"]["encoder"]["hits"] == 1  # the sample image of row 1 is row 0's
    # each batch's two rows share their head: computed for the first row, a hit for the second
    assert cached["caches"]["prefix"]["hits"] == 2 and cached["caches"]["prefix"]["entries"] == 2
    bad = subprocess.run([sys.executable, "-m", "vita_framework", *BASE, "prefix_cache_mb=-1",
                          f"hydra.run.dir={tmp_path / 'bad'}"], capture_output=True, text=True, timeout=120,
                         env=run_env)
    assert bad.returncode != 0 and "prefix_cache_mb must be a number of MB >= 0" in bad.stderr
