"""The shipped default bundle is trained: it answers held-out synthetic questions, and only through the image.

Why these checks: a tiny LLM can learn the answer distribution of the text alone, so accuracy by itself would
not prove that the tower, projector and splice fusion work. The same questions with the image features
replaced (another scene's image, or zeroed features through a wrapped fusion) must score far lower.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import vita_framework
from vita_framework.cli import SAMPLE_IMAGE
from vita_framework.request import Request
from vita_framework.weights import default_bundle_path, read_bundle_info
from vita_training import synthetic

N_HELDOUT = 200
INFO = read_bundle_info(default_bundle_path())


@pytest.fixture(scope="module")
def pipe():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine one thread is several times faster than two
    try:
        yield vita_framework.build(["+vision=internvit", "+audio=none", "device=cpu"])
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def heldout():
    examples = synthetic.examples("heldout", N_HELDOUT)
    return examples, [e.image() for e in examples]


def _accuracy(pipe, examples, images) -> float:
    requests = [Request(e.question, images=[image]) for e, image in zip(examples, images)]
    rows = pipe.generate_batch(requests, batch_size=50, max_new_tokens=16).rows
    return sum(synthetic.is_correct(r.text, e.answer) for r, e in zip(rows, examples)) / len(examples)


class _ZeroImageFusion:
    """The pipeline's fusion with every image feature row replaced by zeros."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def fuse(self, input_ids, attention_mask, embed, features, placeholder_ids):
        features = {**features, "image": [torch.zeros_like(f) for f in features.get("image", [])]}
        return self.inner.fuse(input_ids, attention_mask, embed, features, placeholder_ids)


def test_bundle_info_records_the_training():
    assert INFO["weights"] == "trained" and INFO["data"] == synthetic.DATA_VERSION
    assert isinstance(INFO["seed"], int) and INFO["train_config"]["steps"] > 0
    size = sum(p.stat().st_size for p in default_bundle_path().rglob("*") if p.is_file())
    assert size < 20e6


def test_heldout_questions_are_answered(pipe, heldout):
    examples, images = heldout
    # 1.0 on these 200 (bundle_info.json: 0.994 on 500, every kind 0.98 or more)
    assert _accuracy(pipe, examples, images) >= 0.95


def test_answers_come_from_the_image(pipe, heldout):
    examples, images = heldout
    shifted = images[1:] + images[:1]  # every question asked about another held-out scene
    assert _accuracy(pipe, examples, shifted) < 0.3  # measured 0.20 (with the right images 1.0)
    real = pipe.fusion
    pipe.fusion = _ZeroImageFusion(real)
    try:
        assert _accuracy(pipe, examples, images) < 0.3
    finally:
        pipe.fusion = real


def test_default_command_describes_the_sample(tmp_path, run_env):
    sample = synthetic.scene_examples(INFO["sample"]["split"], INFO["sample"]["index"], 1)[0]
    expected = sample.scene.description()
    assert sample.image().tobytes() == _png(SAMPLE_IMAGE).tobytes()  # the shipped sample is that scene
    cmd = [sys.executable, "-m", "vita_framework", "+vision=internvit", "+audio=none", "device=cpu",
           f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=run_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads((tmp_path / "result.json").read_text())["rows"][0]
    assert row["prompt"] == synthetic.DESCRIBE
    assert synthetic.is_correct(row["text"], expected), (row["text"], expected)
    assert row["text"] in proc.stdout
    assert f"trained on synthetic shapes (data {synthetic.DATA_VERSION})" in proc.stderr
    im_end = pipe_free_im_end_id()
    assert row["generated_ids"][-1] == im_end and row["tokens_out"] < 64  # stopped by <|im_end|>, not the limit


def _png(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def pipe_free_im_end_id() -> int:
    tokens = json.loads((default_bundle_path() / "tokenizer.json").read_text())["added_tokens"]
    return next(t["id"] for t in tokens if t["content"] == "<|im_end|>")
