"""The encoder cache (features by content hash, bounded LRU) and per-row generation control (``generate_rows``):
answers equal without them, hits counted, the bound kept; each row's limit, stop strings, cancel and text."""

from __future__ import annotations

import threading

import pytest
import torch

from conftest import build_cached
from vita_framework.cli import SAMPLE_IMAGE
from vita_framework.encoder_cache import CachedItem, EncoderCache
from vita_framework.request import Request
from vita_framework.row_control import RowControl

BASE = ("+vision=internvit", "+audio=none")


@pytest.fixture
def pipe():
    pipe = build_cached(*BASE)
    yield pipe
    pipe.set_encoder_cache(None)


@pytest.fixture(scope="module")
def scenes():
    from vita_training import synthetic

    return [(e.image(224), e.question) for e in synthetic.examples("heldout", 3)]


def test_answers_equal_with_and_without_the_cache(pipe, scenes):
    requests = [Request(q, images=[img]) for img, q in scenes] + \
        [Request("Describe this image.", images=[img]) for img, _ in scenes] + \
        [Request("How many shapes are there?", images=[scenes[0][0], scenes[1][0]]), Request("Hi.")]
    pipe.set_encoder_cache(None)
    plain = pipe.generate_batch(requests, batch_size=4)
    pipe.set_encoder_cache(64)
    cached = pipe.generate_batch(requests, batch_size=4)
    assert [r.generated_ids for r in cached.rows] == [r.generated_ids for r in plain.rows]
    assert [r.tokens_in for r in cached.rows] == [r.tokens_in for r in plain.rows]
    stats = pipe.encoder_cache.stats()
    assert stats["queries"] == 8 and stats["hits"] == 5 and stats["items"] == 3  # each scene encoded once
    again = pipe.generate_batch(requests, batch_size=4)
    assert [r.generated_ids for r in again.rows] == [r.generated_ids for r in plain.rows]
    assert pipe.encoder_cache.stats()["hits"] == 13


def test_a_hit_gives_the_features_computed_and_a_partial_hit_lines_up(pipe, tmp_path):
    from PIL import Image, ImageDraw

    other = Image.new("RGB", (300, 200), (20, 40, 60))
    ImageDraw.Draw(other).ellipse((40, 40, 160, 160), fill=(200, 30, 30))
    pipe.set_encoder_cache(None)
    alone = pipe.prepare(Request("What?", images=[SAMPLE_IMAGE, other]))
    pipe.set_encoder_cache(64)
    first = pipe.prepare(Request("What?", images=[SAMPLE_IMAGE]))
    # the same bytes under another name hit; the second image is encoded and spliced after
    copy = tmp_path / "copy.png"
    copy.write_bytes(SAMPLE_IMAGE.read_bytes())
    mixed = pipe.prepare(Request("What?", images=[copy, other]))
    assert pipe.encoder_cache.stats()["hits"] == 1
    pipe.prepare(Request("What?", images=[other.copy()]))  # an object in memory: keyed by its pixels
    assert pipe.encoder_cache.stats()["hits"] == 2
    assert mixed.input_ids == alone.input_ids and mixed.tokens == alone.tokens
    assert torch.equal(mixed.features["image"][0], first.features["image"][0])
    for got, want in zip(mixed.features["image"], alone.features["image"]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_cache_stays_within_its_bound():
    cache = EncoderCache(0.001)  # 1048 bytes
    item = CachedItem(1, (4,), (torch.zeros(4, 32),))  # 512 bytes
    assert cache.put("a", item) and cache.put("b", item)
    assert cache.put("c", item) and len(cache) == 2 and cache.get("a") is None  # least recently used went
    assert cache.bytes_used <= cache.max_bytes and cache.stats()["evictions"] == 1
    assert not cache.put("big", CachedItem(1, (4,), (torch.zeros(4, 1024),)))  # larger than the whole cache
    assert EncoderCache.key("image/x", b"\x00\x01") == EncoderCache.key("image/x", b"\x00\x01")
    assert EncoderCache.key("image/x", b"\x00\x01") != EncoderCache.key("image/y", b"\x00\x01")
    assert EncoderCache.key("image/x", [b"\x00", b"\x01"]) != EncoderCache.key("image/x", [b"\x00\x01"])


def test_rows_keep_their_own_limit_stop_and_cancel(pipe):
    questions = ["Describe this image.", "What shape is purple?", "Describe this image.", "Describe this image."]
    requests = [Request(q, images=[SAMPLE_IMAGE]) for q in questions]
    alone = [pipe.generate(r).rows[0] for r in requests]
    assert alone[0].text == "a purple square, a yellow triangle and a green star"  # the sample's description
    pieces = [[] for _ in requests]
    gone = threading.Event()
    gone.set()
    controls = [RowControl(stop=[" triangle"], on_text=pieces[0].append), RowControl(on_text=pieces[1].append),
                RowControl(max_new_tokens=3, on_text=pieces[2].append), RowControl(cancel=gone)]
    result = pipe.generate_rows([pipe.prepare(r) for r in requests], controls)
    assert [c.finish_reason for c in controls] == ["stop", "stop", "length", "cancelled"]
    assert result.rows[0].text == "a purple square, a yellow" and "".join(pieces[0]) == result.rows[0].text
    assert result.rows[1].generated_ids == alone[1].generated_ids and "".join(pieces[1]) == alone[1].text
    assert result.rows[2].generated_ids == alone[2].generated_ids[:3] and result.rows[2].text == "a purple square"
    assert result.rows[3].generated_ids == [] and result.rows[3].tokens_out == 0
