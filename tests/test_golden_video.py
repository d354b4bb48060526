"""Video parity with the reference (golden case 4: 50 frames at 10 fps, slow-fast) and the token budget."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import GOLDEN, GOLDEN_CKPT, build_cached, golden_tensors
from vita_framework.errors import InputError
from vita_framework.request import Request

CASE4 = GOLDEN / "case4_video_sf"
VITA15_SF = ("+experiment=vita15", f"checkpoint={GOLDEN_CKPT}", "dtype=float32", "device=cpu", "fusion=slow_fast",
             "vision.attn_implementation=eager", "generation.max_new_tokens=20")


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    data = np.load(CASE4 / "video_frames_u8.npz")
    out = tmp_path_factory.mktemp("frames")
    for i, frame in enumerate(data["frames"]):
        Image.fromarray(frame).save(out / f"frame_{i:03d}.png")
    return out


def test_case4_slow_fast_embeddings_match_reference(frames_dir):
    pipe = build_cached(*VITA15_SF)
    gold = golden_tensors("case4_video_sf")
    meta = json.loads((CASE4 / "meta.json").read_text())
    request = Request(meta["question"], videos=[frames_dir], video_fps=10)
    prepared = pipe.prepare(request)
    ids, features, counts = prepared.input_ids, prepared.features, prepared.tokens
    assert [int(f.shape[0]) for f in features["image"]] == [144, 49, 49, 49, 144]
    assert (torch.cat(features["image"]) - gold["image_features_sf_concat"]).abs().max() <= 1e-5
    assert counts == {"image": 0, "video": 435, "audio": 0, "text": 260, "total": 695}
    ids_t = torch.tensor([ids])
    fused = pipe.fusion.fuse(ids_t, torch.ones_like(ids_t), pipe.llm.embed, features, pipe.placeholder_ids)
    assert (fused.inputs_embeds - gold["inputs_embeds"]).abs().max() <= 1e-5


def test_case4_through_the_cli(frames_dir, tmp_path, run_env):
    meta = json.loads((CASE4 / "meta.json").read_text())
    cmd = [sys.executable, "-m", "vita_framework", *VITA15_SF, f"prompt={meta['question']}",
           f"videos=[{frames_dir}]", "video_fps=10", "output.scores=true", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=run_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gold = golden_tensors("case4_video_sf")
    row = json.loads((tmp_path / "result.json").read_text())["rows"][0]
    assert row["generated_ids"] == gold["generated_ids_demo"][0].tolist()
    assert (load_file(str(tmp_path / "scores.safetensors"))["scores"] - gold["scores_demo"]).abs().max() < 1e-4


def test_without_slow_fast_each_frame_costs_256(frames_dir):
    pipe = build_cached(*[o for o in VITA15_SF if o != "fusion=slow_fast"])
    counts = pipe.prepare(Request("What?", videos=[frames_dir], video_fps=10)).tokens
    assert counts["video"] == 5 * 256


def test_token_budget_is_checked_before_encoding(frames_dir):
    pipe = build_cached(*[o for o in VITA15_SF if o != "fusion=slow_fast"], "video.max_frames=30",
                        "video.frames_per_second=10")
    calls = []
    handle = pipe.vision.model.register_forward_hook(lambda *a: calls.append(1))
    old = pipe.max_length
    pipe.max_length = 4000
    try:
        with pytest.raises(InputError, match=r"needs \d+ positions .*video 7680.*allows 4000.*fusion=slow_fast"):
            pipe.prepare(Request("What?", videos=[frames_dir], video_fps=10))
    finally:
        pipe.max_length = old
        handle.remove()
    assert calls == []
