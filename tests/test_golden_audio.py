"""Audio parity with the reference (golden case 3 through the CLI) and swapping the audio encoder."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

from conftest import GOLDEN, GOLDEN_CKPT, build_cached, golden_tensors
from vita_framework.request import Request

CASE3 = GOLDEN / "case3_image_audio"
VITA15_AUDIO = ("+experiment=vita15", f"checkpoint={GOLDEN_CKPT}", "dtype=float32", "device=cpu", "audio=whale",
                "vision.attn_implementation=eager", "generation.max_new_tokens=20")


def test_case3_image_and_audio_embeddings_match_reference():
    pipe = build_cached(*VITA15_AUDIO)
    gold = golden_tensors("case3_image_audio")
    prepared = pipe.prepare(Request("", images=[CASE3 / "source.png"], audios=[CASE3 / "audio.wav"]))
    ids, features, counts = prepared.input_ids, prepared.features, prepared.tokens
    assert counts["audio"] == 24 and counts["image"] == 256 and counts["total"] == 526
    assert (features["audio"][0] - gold["audio_encoder_out"][0]).abs().max() <= 1e-4
    ids_t = torch.tensor([ids])
    fused = pipe.fusion.fuse(ids_t, torch.ones_like(ids_t), pipe.llm.embed, features, pipe.placeholder_ids)
    assert (fused.inputs_embeds - gold["inputs_embeds"]).abs().max() <= 1e-5


def test_case3_through_the_cli_gives_reference_tokens(tmp_path, run_env):
    cmd = [sys.executable, "-m", "vita_framework", *VITA15_AUDIO, "prompt=", f"images=[{CASE3 / 'source.png'}]",
           f"audios=[{CASE3 / 'audio.wav'}]", "output.scores=true", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=run_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gold = golden_tensors("case3_image_audio")
    row = json.loads((tmp_path / "result.json").read_text())["rows"][0]
    assert row["generated_ids"] == gold["generated_ids_demo"][0].tolist()
    scores = load_file(str(tmp_path / "scores.safetensors"))["scores"]
    assert (scores - gold["scores_demo"]).abs().max() < 1e-4
    assert row["tokens_in"]["audio"] == 24


def test_same_request_with_whale_and_whisper_no_code_change():
    request = dict(images=[CASE3 / "source.png"], audios=[CASE3 / "audio.wav"], max_new_tokens=4)
    results = {}
    for encoder in ("whale", "whisper"):
        overrides = [o if not o.startswith("audio=") else f"audio={encoder}" for o in VITA15_AUDIO]
        pipe = build_cached(*overrides)
        results[encoder] = pipe.generate("", **request)
    assert results["whale"].rows[0].tokens_in["audio"] == 24
    # whisper: 2.0 s -> 100 encoder frames -> pooled by 4 -> 25 tokens at the LLM width
    assert results["whisper"].rows[0].tokens_in["audio"] == 25
    assert type(build_cached(*[o if o != "audio=whale" else "audio=whisper" for o in VITA15_AUDIO]).audio).__name__ \
        == "WhisperAudioEncoder"


def test_whisper_splits_long_audio_into_windows(tmp_path):
    import soundfile

    t = torch.arange(int(16000 * 65.5)) / 16000
    wav = tmp_path / "long.wav"
    soundfile.write(str(wav), (0.3 * torch.sin(2 * torch.pi * 440 * t)).numpy(), 16000)
    pipe = build_cached(*[o if o != "audio=whale" else "audio=whisper" for o in VITA15_AUDIO])
    batch = pipe.audio.preprocess([torch.zeros(int(16000 * 65.5))], 16000)
    assert [p.numel() for p in batch.windows[0]] == [480000, 480000, 88000]
    out = pipe.audio.encode(batch)[0]
    assert out.shape == (-(-(1500 + 1500 + 275) // 4), 64)
    result = pipe.generate("", audios=[wav], max_new_tokens=2)
    assert result.rows[0].tokens_in["audio"] == out.shape[0]
