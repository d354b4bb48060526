"""speech.specaugment: masked mel bands and frame stretches of training clips (vita_training.specmask)."""

from __future__ import annotations

import pytest
import torch

from vita_framework.errors import ConfigError
from vita_training.specmask import FeatureMasks, feature_masks


def test_masks_hide_bands_and_stretches_with_the_fill_and_repeat_by_key():
    torch.manual_seed(0)
    features = torch.randn(3, 50, 80) + 5.0  # never equal to the fill below
    lengths = torch.tensor([50, 30, 12])
    fill = torch.full((80,), -1.0)
    original = features.clone()
    bands = FeatureMasks(freq_masks=2, freq_width=10)
    out = bands.apply(features, lengths, fill, ["a", "b", None])
    assert torch.equal(out[2], features[2])  # no key: left alone
    assert torch.equal(features, original)  # the input is not changed
    for i in (0, 1):
        hidden_bins = (out[i] == -1.0).all(0)  # a masked bin is hidden in every frame
        assert 0 <= int(hidden_bins.sum()) <= 20
        assert torch.equal(out[i][:, ~hidden_bins], features[i][:, ~hidden_bins])
    assert torch.equal(out, bands.apply(features, lengths, fill, ["a", "b", None]))  # same keys, same masks
    assert not torch.equal(out, bands.apply(features, lengths, fill, ["c", "d", None]))
    stretches = FeatureMasks(time_masks=3, time_width=8)
    out = stretches.apply(features, lengths, fill, ["a", "b", "c"])
    for i, n in enumerate(lengths.tolist()):
        hidden_frames = (out[i] == -1.0).all(1)
        assert int(hidden_frames.sum()) <= 24
        assert not hidden_frames[n:].any()  # padding beyond a clip's length is never touched
        assert torch.equal(out[i][~hidden_frames], features[i][~hidden_frames])
    assert any((stretches.apply(features, lengths, fill, [f"k{j}"] * 3)[0] == -1.0).all(1).any() for j in range(5))


def test_masks_never_exceed_a_short_clip_or_few_bins():
    features, fill = torch.ones(1, 5, 4), torch.zeros(4)
    out = FeatureMasks(freq_masks=3, freq_width=40, time_masks=3, time_width=40).apply(
        features, torch.tensor([5]), fill, ["x"])
    assert out.shape == features.shape


def test_warp_moves_the_spectrum_by_a_factor_drawn_from_the_key():
    """A feature that is a ramp over the bins shows the factor: bin b reads b x factor (clamped at the top)."""
    ramp = torch.arange(80, dtype=torch.float32).expand(2, 20, 80).clone()
    lengths, fill = torch.tensor([20, 20]), torch.zeros(80)
    warp = FeatureMasks(warp=(0.8, 1.25))
    out = warp.apply(ramp, lengths, fill, ["a", None])
    assert torch.equal(out[1], ramp[1])  # no key: left alone
    factor = float(out[0, 0, 10]) / 10
    assert 0.8 <= factor <= 1.25 and abs(factor - 1) > 1e-3
    expected = torch.clamp(torch.arange(80) * factor, max=79)
    assert torch.allclose(out[0], expected.expand(20, 80), atol=1e-4)  # every frame, every bin, linearly read
    assert torch.equal(out, warp.apply(ramp, lengths, fill, ["a", None]))  # same key, same factor
    others = {round(float(warp.apply(ramp, lengths, fill, [f"k{j}", None])[0, 0, 10]), 3) for j in range(8)}
    assert len(others) == 8
    identity = FeatureMasks(warp=(1.0, 1.0)).apply(ramp, lengths, fill, ["a", "b"])
    assert torch.allclose(identity, ramp)


def test_config_is_read_and_checked():
    assert feature_masks(None) is None and feature_masks({}) is None
    assert feature_masks({"freq_masks": 2, "freq_width": 0}) is None  # masks nothing
    masks = {"freq_masks": 2, "freq_width": 15, "time_masks": 1, "time_width": 20}
    assert feature_masks(masks) == FeatureMasks(2, 15, 1, 20)
    with pytest.raises(ConfigError, match=r"speech\.specaugment\.time_width must be a whole number >= 0; got -3"):
        feature_masks({"time_masks": 1, "time_width": -3})
    with pytest.raises(ConfigError, match=r"speech\.specaugment: unknown key\(s\) freq_mask; use freq_masks, "):
        feature_masks({"freq_mask": 2})
    assert feature_masks({"warp": [0.9, 1.1]}) == FeatureMasks(warp=(0.9, 1.1))  # warping alone is a change
    for bad in ([1.1, 0.9], [0, 1.2], "fast", 1.1, [0.9, 1.0, 1.1]):
        with pytest.raises(ConfigError, match=r"speech\.specaugment\.warp must be \[low, high\] with 0 < low <= high"):
            feature_masks({"warp": bad})


@pytest.mark.usefixtures("espeak")
def test_the_trainer_masks_training_clips_and_never_heldout_ones(tmp_path):
    """Through the real SpokenTrainer on the embedded default (whale encoder, espeak-ng speech): every spoken
    training row's features are masked with the encoder's CMVN mean; a held-out row is exactly as spoken."""
    import vita_framework
    from vita_training import synthetic
    from vita_training.speech import SpeechBank
    from vita_training.spoken import SpokenTrainer

    pipe = vita_framework.build(["+vision=internvit", "+audio=whale", "device=cpu"])
    trainer = SpokenTrainer(pipe, SpeechBank(tmp_path / "speech"))
    trainer.spoken_share = 1.0
    groups = [synthetic.scene_examples("train", 3, 2), synthetic.scene_examples("heldout", 3, 1)]
    _, plain = trainer.prompts(groups)
    trainer.masks = FeatureMasks(freq_masks=2, freq_width=12, time_masks=2, time_width=15)
    _, masked = trainer.prompts(groups)
    assert torch.equal(masked.lengths, plain.lengths)
    mean = trainer.audio.encoder.global_cmvn.mean
    for row in (0, 1):  # training rows: some cells changed, and each changed cell now holds the CMVN mean
        changed = masked.features[row] != plain.features[row]
        assert changed.any()
        assert torch.equal(masked.features[row][changed], mean.expand_as(plain.features[row])[changed])
    assert torch.equal(masked.features[2], plain.features[2])  # the held-out row
    trainer.masks = FeatureMasks(warp=(0.85, 1.15))  # warped alone: training rows change, held-out never
    _, warped = trainer.prompts(groups)
    assert all(not torch.equal(warped.features[row], plain.features[row]) for row in (0, 1))
    assert torch.equal(warped.features[2], plain.features[2])
