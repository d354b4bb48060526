"""``+experiment=vita15`` is the whole of VITA-1.5: the whale encoder is configured but built on the first request
with audio, so an image-only run reads no audio weights."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import vita_framework
from conftest import GOLDEN, GOLDEN_CKPT, golden_tensors
from vita_framework.errors import ValidationErrors
from vita_framework.lazy import LazyComponent
from vita_framework.request import Request

CASE3 = GOLDEN / "case3_image_audio"
VITA15 = ["+experiment=vita15", f"checkpoint={GOLDEN_CKPT}", "dtype=float32", "device=cpu",
          "vision.attn_implementation=eager", "generation.max_new_tokens=4"]


def test_image_only_requests_never_build_the_audio_encoder_and_audio_requests_do():
    pipe = vita_framework.build(VITA15)
    lazy = pipe.encoders["audio"]
    assert isinstance(lazy, LazyComponent) and not lazy.built
    pipe.generate("What is this?", images=[CASE3 / "source.png"])
    assert not lazy.built
    prepared = pipe.prepare(Request("", images=[CASE3 / "source.png"], audios=[CASE3 / "audio.wav"]))
    assert lazy.built and prepared.tokens["audio"] == 24
    assert (prepared.features["audio"][0] - golden_tensors("case3_image_audio")["audio_encoder_out"][0]).abs().max() \
        <= 1e-4
    assert type(pipe.audio).__name__ == "WhaleAudioEncoder"  # asking by name builds and returns the real one


def test_the_documented_parity_form_works_without_naming_the_audio_encoder(tmp_path, run_env):
    cmd = [sys.executable, "-m", "vita_framework", "+experiment=vita15", f"checkpoint={GOLDEN_CKPT}", "dtype=float32",
           "device=cpu", "vision.attn_implementation=eager", "generation.max_new_tokens=20", "prompt=",
           f"images=[{CASE3 / 'source.png'}]", f"audios=[{CASE3 / 'audio.wav'}]", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=run_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads((tmp_path / "result.json").read_text())["rows"][0]
    assert row["generated_ids"] == golden_tensors("case3_image_audio")["generated_ids_demo"][0].tolist()


def test_a_lazy_component_that_others_derive_from_is_refused():
    with pytest.raises(ValidationErrors, match="lazy: 'vision' cannot be built lazily"):
        vita_framework.compose([*VITA15, "lazy=[vision]"])


def test_lazy_component_builds_once_under_concurrent_first_use():
    import threading

    calls = []
    lazy = LazyComponent("audio", lambda: calls.append(1) or torch.nn.Identity())
    threads = [threading.Thread(target=lambda: lazy.training) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1] and lazy.built
