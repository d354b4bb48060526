"""Whale audio encoder parity with the reference (golden tensors), batching, and its error messages."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import GOLDEN, GOLDEN_CKPT, golden_tensors
from vita_framework.errors import CheckpointError, InputError
from vita_framework.plugin_manager import get_registry
from vita_framework.registry import BuildContext
from vita_framework.weights import Bundle

ATOL = 1e-5


def build(checkpoint=GOLDEN_CKPT, **options):
    ctx = BuildContext(checkpoint=Bundle(checkpoint), dtype="float32", device="cpu")
    return get_registry().build("audio", {"component": "whale", **options}, ctx)


@pytest.fixture(scope="module")
def encoder():
    return build()


def test_case3_golden_fbank_gives_reference_output(encoder):
    gold = golden_tensors("case3_image_audio")
    assert gold["fbank"].shape == (1, 198, 80)
    (out,) = encoder.encode_features(gold["fbank"], gold["audio_lengths"])
    assert out.shape == (24, 64) == gold["audio_encoder_out"][0].shape
    assert int(gold["audio_lengths_for_llm"][0]) == 24
    assert (out - gold["audio_encoder_out"][0]).abs().max() <= ATOL
    assert encoder.hidden_size == 64 and encoder.sample_rate == 16000


def test_case3_wav_through_preprocess(encoder):
    import soundfile as sf

    wave, rate = sf.read(str(GOLDEN / "case3_image_audio" / "audio.wav"), dtype="float32")
    batch = encoder.preprocess([torch.from_numpy(wave)], rate)
    assert batch.features.shape == (1, 198, 80) and batch.lengths.tolist() == [198]
    assert batch.lengths.dtype == torch.int64
    (out,) = encoder.encode(batch)
    assert (out - golden_tensors("case3_image_audio")["audio_encoder_out"][0]).abs().max() <= 1e-4


def test_static_chunk_mask_matches_reference():
    gold = golden_tensors("extra_audio_chunked")
    chunked = build(chunk_size=4, left_chunks=2)
    assert (chunked.chunk_size, chunked.left_chunks) == (4, 2)
    (out,) = chunked.encode_features(gold["fbank"], gold["audio_lengths"])
    assert (out - gold["audio_encoder_out_chunk4_left2"][0]).abs().max() <= ATOL
    full = golden_tensors("case3_image_audio")["audio_encoder_out"][0]
    assert (out - full).abs().max() > 1e-3  # the mask really changed something


def test_default_chunking_comes_from_train_yaml(encoder):
    assert (encoder.chunk_size, encoder.left_chunks) == (-1, -1)  # golden train.yaml: full attention


def test_case5_padded_batch_matches_rows_and_reference(encoder):
    gold = golden_tensors("case5_batch2")
    fbank, lengths = gold["fbank"], gold["audio_lengths"]  # lengths as float16, as the reference demo
    assert lengths.dtype == torch.float16 and lengths.tolist() == [400.0, 128.0]
    batched = encoder.encode_features(fbank, lengths)
    assert [o.shape[0] for o in batched] == [50, 16]
    assert int(gold["audio_lengths_for_llm"][1]) == 16
    alone = encoder.encode_features(fbank[1:, :128], torch.tensor([128]))[0]
    assert (batched[1] - alone).abs().max() <= ATOL
    assert (batched[1] - gold["audio_encoder_out"][1, :16]).abs().max() <= ATOL
    assert (batched[0] - gold["audio_encoder_out"][0, :50]).abs().max() <= ATOL  # the dummy row


@pytest.mark.parametrize("frames", [0, 1, 6])
def test_too_short_audio_is_an_input_error(encoder, frames):
    with pytest.raises(InputError, match="at least 7"):
        encoder.encode_features(torch.zeros(1, frames, 80), torch.tensor([frames]))


def test_seven_frames_give_one_token(encoder):
    assert encoder.encode_features(torch.zeros(1, 7, 80), [7])[0].shape == (1, 64)


def test_short_or_empty_waveform_is_an_input_error(encoder):
    with pytest.raises(InputError, match="clip 0"):
        encoder.preprocess([torch.zeros(0)], 16000)
    with pytest.raises(InputError, match="clip 1"):
        encoder.preprocess([torch.zeros(16000), torch.zeros(1000)], 16000)
    with pytest.raises(InputError, match="16000 Hz"):
        encoder.preprocess([torch.zeros(16000)], 8000)


def test_bad_feature_shape_and_lengths(encoder):
    with pytest.raises(InputError, match=r"\[B, T, 80\]"):
        encoder.encode_features(torch.zeros(1, 20, 40), [20])
    with pytest.raises(InputError, match="batch holds 20"):
        encoder.encode_features(torch.zeros(1, 20, 80), [21])


def test_max_seconds_is_enforced():
    short = build(max_seconds=1.0)
    with pytest.raises(InputError, match="max_seconds"):
        short.preprocess([torch.zeros(20000)], 16000)
    with pytest.raises(InputError, match="max_seconds"):
        short.encode_features(torch.zeros(1, 150, 80), [150])


def _bundle_copy(tmp_path, drop=(), ckpt_name="ckpt"):
    """The golden bundle with some audio tensors removed; final.pt is not copied (it is never needed)."""
    root = tmp_path / ckpt_name
    (root / "audio-encoder-tiny").mkdir(parents=True)
    shutil.copy(GOLDEN_CKPT / "config.json", root)
    for name in ("train.yaml", "global_cmvn"):
        shutil.copy(GOLDEN_CKPT / "audio-encoder-tiny" / name, root / "audio-encoder-tiny")
    state = load_file(str(GOLDEN_CKPT / "model.safetensors"))
    keep = {k: v for k, v in state.items() if k.startswith("model.audio_encoder.") and k not in drop}
    save_file(keep, str(root / "model.safetensors"))
    return root


def test_missing_audio_tensor_is_named(tmp_path):
    key = "model.audio_encoder.encoder.enc.1.encoders.0.self_attn.linear_pos.weight"
    root = _bundle_copy(tmp_path, drop=(key,))
    with pytest.raises(CheckpointError, match=r"encoder\.enc\.1\.encoders\.0\.self_attn\.linear_pos\.weight"):
        build(root)


def test_no_audio_tensors_at_all(tmp_path):
    root = _bundle_copy(tmp_path, drop=tuple(load_file(str(GOLDEN_CKPT / "model.safetensors"))))
    with pytest.raises(CheckpointError, match="no audio tensors"):
        build(root)


def test_cmvn_falls_back_to_json_stats(tmp_path):
    """Checkpoint CMVN tensors win; without them the JSON stats give (nearly) the same values."""
    ckpt = load_file(str(GOLDEN_CKPT / "model.safetensors"))
    drop = ("model.audio_encoder.encoder.global_cmvn.mean", "model.audio_encoder.encoder.global_cmvn.istd")
    from_json = build(_bundle_copy(tmp_path, drop=drop))
    assert torch.equal(build().encoder.global_cmvn.mean, ckpt[drop[0]])
    assert (from_json.encoder.global_cmvn.mean - ckpt[drop[0]]).abs().max() < 1e-5
    assert (from_json.encoder.global_cmvn.istd - ckpt[drop[1]]).abs().max() < 1e-6
    gold = golden_tensors("case3_image_audio")
    (out,) = from_json.encode_features(gold["fbank"], gold["audio_lengths"])
    assert (out - gold["audio_encoder_out"][0]).abs().max() <= 1e-4


def test_random_init_without_checkpoint_warns():
    with pytest.warns(UserWarning, match="RANDOM"):
        enc = get_registry().build("audio", {"component": "whale"}, BuildContext(checkpoint=None))
    assert torch.equal(enc.encoder.global_cmvn.istd, torch.ones(80))
    (out,) = enc.encode(enc.preprocess([torch.rand(16000) * 2 - 1], 16000))
    assert out.shape == (12, 64)
