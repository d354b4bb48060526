"""The embedded default answers spoken questions: ``+audio=whale`` with an image and a question asked aloud.

The shipped example questions (``assets/questions``: the sample scene's questions spoken in the held-out voice,
made by ``python -m vita_framework.train``) need no speech engine, so these checks run anywhere. They check that
the spoken answer is the typed one, through the public pipeline and the real CLI, and that audio that is not
speech still gets an answer rather than an error.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import vita_framework
from vita_framework.cli import SAMPLE_IMAGE
from vita_framework.weights import default_bundle_path, read_bundle_info
from vita_training import synthetic

QUESTIONS = SAMPLE_IMAGE.parent / "questions"
INFO = read_bundle_info(default_bundle_path())


@pytest.fixture(scope="module")
def pipe():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield vita_framework.build(["+vision=internvit", "+audio=whale", "device=cpu"])
    finally:
        torch.set_num_threads(threads)


def shipped_questions() -> list[dict[str, str]]:
    return json.loads((QUESTIONS / "questions.json").read_text())


def test_the_bundle_records_its_spoken_accuracy_on_the_heldout_voice():
    """Measured at training time on the 500 held-out questions, spoken in the held-out voice: issue 18's targets,
    every kind typed at 0.95 or more and spoken within 5 points of typed (shipped: 0.946 spoken, 0.994 typed)."""
    assert INFO["spoken_voice"] == "en-029+f4/150/55"  # the held-out voice: no training voice shares it
    assert INFO["spoken_accuracy"] >= 0.93 and INFO["heldout_accuracy"] >= 0.95  # shipped: 0.946, 0.994
    assert INFO["heldout_accuracy"] - INFO["spoken_accuracy"] <= 0.05
    assert min(INFO["heldout_accuracy_by_kind"].values()) >= 0.95  # colour, the lowest: 0.974
    assert set(INFO["spoken_accuracy_by_kind"]) == set(synthetic.QUESTION_KINDS)
    assert INFO["spoken_accuracy_by_kind"]["count"] >= 0.95  # heard and answered as well as typed


VOCABULARY = {*synthetic.SHAPES, *synthetic.COLOURS, *synthetic.POSITIONS, *synthetic.NUMBERS, "a", "and"}


def test_shipped_spoken_questions_get_the_typed_answer_or_a_well_formed_one(pipe):
    """The README's spoken questions (shape, count) are answered right, and all five typed; every spoken answer is
    made of answer words (no fused or invented words), right or not. (In the held-out voice the bundle answers 81 %
    of held-out questions; of this scene's five it gets describe, colour and position wrong.)"""
    asked = shipped_questions()
    assert {q["kind"] for q in asked} == set(synthetic.QUESTION_KINDS)
    for question in asked:
        spoken = pipe.generate("", images=[SAMPLE_IMAGE], audios=[QUESTIONS / question["file"]]).text
        assert set(synthetic.normalise(spoken).replace(",", "").split()) <= VOCABULARY, spoken
        if question["kind"] in ("shape", "count"):
            assert synthetic.is_correct(spoken, question["answer"]), (question, spoken)
        typed = pipe.generate(question["question"], images=[SAMPLE_IMAGE]).text
        assert synthetic.is_correct(typed, question["answer"]), (question, typed)


def test_cli_answers_a_spoken_question(tmp_path, run_env):
    question = next(q for q in shipped_questions() if q["kind"] == "shape")
    cmd = [sys.executable, "-m", "vita_framework", "+vision=internvit", "+audio=whale", "device=cpu",
           f"images=[{SAMPLE_IMAGE}]", f"audios=[{QUESTIONS / question['file']}]", "stream=false",
           f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=run_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads((tmp_path / "result.json").read_text())["rows"][0]
    assert row["prompt"] == "" and row["tokens_in"]["audio"] > 5
    assert synthetic.is_correct(row["text"], question["answer"]), row["text"]
    assert proc.stdout.strip() == row["text"]


@pytest.mark.parametrize("kind", ["silence", "noise", "tone"])
def test_audio_that_is_not_speech_gets_an_answer_not_an_error(pipe, kind):
    rate = 16000
    t = np.arange(rate * 2) / rate
    clip = {"silence": np.zeros_like(t), "noise": np.random.default_rng(0).normal(0, 0.3, t.shape),
            "tone": 0.5 * np.sin(2 * np.pi * 440 * t)}[kind].astype(np.float32)
    result = pipe.generate("", images=[SAMPLE_IMAGE], audios=[(clip, rate)], max_new_tokens=24)
    assert result.rows[0].tokens_in["audio"] == 24 and result.rows[0].tokens_out >= 1  # ~12.5 tokens a second
