"""Spoken questions made with espeak-ng (real engine, no mocks): shape of the audio, determinism, the voice grid,
the disk cache, the error when espeak-ng is missing, and the WAV writer."""

from __future__ import annotations

import numpy as np
import pytest

from vita_framework.errors import ConfigError
from vita_training import speech, synthetic
from vita_training.speech import HELDOUT_VOICE, SAMPLE_RATE, TRAIN_VOICES, SpeechBank, Voice

needs_espeak = pytest.mark.usefixtures("espeak")
QUESTION = "Where is the red circle?"


@pytest.fixture
def no_espeak(tmp_path, monkeypatch):
    """A PATH holding no programs at all, so espeak-ng cannot be found."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


def test_voice_grid_and_heldout_voice():
    keys = [v.key for v in TRAIN_VOICES]
    assert len(TRAIN_VOICES) >= 30
    assert len(set(keys)) == len(keys)
    assert all(not v.name.startswith("mb") for v in TRAIN_VOICES)
    assert HELDOUT_VOICE.base not in {v.base for v in TRAIN_VOICES}
    assert HELDOUT_VOICE.variant not in {v.variant for v in TRAIN_VOICES}
    assert HELDOUT_VOICE.variant and HELDOUT_VOICE.key == "en-029+f4/150/55"
    assert Voice("en-gb+f2", 160, 50).key == "en-gb+f2/160/50"
    # pure function of the index, spread over many voices
    assert [speech.train_voice(i) for i in range(50)] == [speech.train_voice(i) for i in range(50)]
    assert len({speech.train_voice(i) for i in range(200)}) > len(TRAIN_VOICES) // 2


@needs_espeak
def test_synthesize_question():
    audio = speech.synthesize(QUESTION, TRAIN_VOICES[0])
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.5 * SAMPLE_RATE <= audio.size <= 4 * SAMPLE_RATE
    assert 0.05 < np.abs(audio).max() <= 1.0
    # silence trimmed to the ~50 ms margin: sound starts within 100 ms of either end
    loud = np.flatnonzero(np.abs(audio) >= 0.005)
    assert loud[0] <= 0.1 * SAMPLE_RATE and audio.size - 1 - loud[-1] <= 0.1 * SAMPLE_RATE


@needs_espeak
def test_deterministic_and_voices_differ():
    voice = TRAIN_VOICES[3]
    a, b = speech.synthesize(QUESTION, voice), speech.synthesize(QUESTION, voice)
    assert np.array_equal(a, b)
    other = speech.synthesize(QUESTION, HELDOUT_VOICE)
    assert other.shape != a.shape or not np.array_equal(a, other)


@needs_espeak
def test_every_voice_speaks():
    """Each voice spec of the grid exists in the installed espeak-ng (a typo would only fail at training)."""
    for voice in (*TRAIN_VOICES, HELDOUT_VOICE):
        assert speech.synthesize("red", voice).size > 0, voice.key


@needs_espeak
def test_every_variant_changes_the_voice():
    """espeak-ng falls back to the plain voice on a variant it does not know (a typo would train on fewer
    speakers than the grid says): each variant must give other samples than its base alone. ``en-gb`` is the
    known exception (espeak-ng 1.51 ignores every variant after it; the shipped grid keeps it, README)."""
    for base in sorted({v.base for v in TRAIN_VOICES} - {"en-gb"}):
        plain = speech.synthesize("red star", Voice(base, 160, 50))
        for variant in sorted({v.variant for v in TRAIN_VOICES}):
            varied = speech.synthesize("red star", Voice(f"{base}+{variant}", 160, 50))
            assert varied.shape != plain.shape or not np.array_equal(varied, plain), (base, variant)


@needs_espeak
def test_speech_bank_caches_on_disk(tmp_path, monkeypatch):
    texts = [synthetic.COUNT, synthetic.DESCRIBE]
    voices = list(TRAIN_VOICES[:2])
    logs: list[str] = []
    bank = SpeechBank(tmp_path / "cache")
    assert bank.prepare(texts, voices, log=logs.append) == 4
    assert logs and bank.prepare(texts, voices) == 0
    first = bank.waveform(synthetic.COUNT, voices[1])
    assert np.array_equal(first, speech.synthesize(synthetic.COUNT, voices[1]))
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".npy"] * 4  # no temporary files left

    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    again = SpeechBank(tmp_path / "cache")
    for text in texts:
        for voice in voices:
            assert np.array_equal(again.waveform(text, voice), bank.waveform(text, voice))
    with pytest.raises(ConfigError):  # not cached, so it needs espeak-ng
        again.waveform(QUESTION, voices[0])


def test_missing_espeak_error(no_espeak):
    with pytest.raises(ConfigError, match=r"apt-get install espeak-ng") as info:
        speech.espeak_binary()
    assert "espeak-ng is not installed" in str(info.value)
    with pytest.raises(ConfigError, match="espeak-ng"):
        speech.synthesize(QUESTION, HELDOUT_VOICE)


@needs_espeak
def test_unknown_voice_error():
    with pytest.raises(ConfigError, match=r"xx-nope\+m1/160/50"):
        speech.synthesize(QUESTION, Voice("xx-nope+m1", 160, 50))


def test_write_wav_round_trip(tmp_path):
    from vita_framework.media.audio import load_audio

    t = np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
    wave = (0.8 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    wave[:3] = [1.0, -1.0, 0.0]
    path = tmp_path / "q.wav"
    speech.write_wav(path, wave)
    back = load_audio(path).numpy()
    assert back.shape == wave.shape
    assert np.abs(back - wave).max() <= 1 / 32768


def test_perturbation_varies_a_clip_reproducibly():
    """speech.augment: the same key gives the same clip; speed resamples (0.8 x as fast: 1.25 x as long), gain
    scales, and the noise sits at the asked signal-to-noise ratio."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    clip = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    slow = speech.Perturbation(speed=(0.8, 0.8))
    assert abs(len(slow.apply(clip, "a")) - 1.25 * len(clip)) <= 2
    louder = speech.Perturbation(gain_db=(6.0, 6.0)).apply(clip, "a")
    assert np.allclose(louder, clip * 10 ** (6 / 20), atol=1e-6)
    noisy = speech.Perturbation(snr_db=(20.0, 20.0)).apply(clip, "a")
    snr = 10 * np.log10(np.mean(clip.astype(np.float64) ** 2) / np.mean((noisy - clip).astype(np.float64) ** 2))
    assert abs(snr - 20.0) < 0.3
    every = speech.Perturbation(speed=(0.85, 1.15), gain_db=(-6.0, 6.0), snr_db=(15.0, 40.0))
    assert np.array_equal(every.apply(clip, "row/1"), every.apply(clip, "row/1"))
    assert not np.array_equal(every.apply(clip, "row/1"), every.apply(clip, "row/2"))
    assert every.apply(clip, "row/1").dtype == np.float32 and np.abs(every.apply(clip * 3, "x")).max() <= 1.0


def test_perturbation_config_is_read_and_checked():
    assert speech.perturbation(None) is None and speech.perturbation({"speed": None}) is None
    assert speech.perturbation({"speed": [0.9, 1.1], "snr_db": None}) == speech.Perturbation(speed=(0.9, 1.1))
    with pytest.raises(ConfigError, match=r"speech\.augment\.gain_db must be \[low, high\] with low <= high; "):
        speech.perturbation({"gain_db": [6, -6]})
    with pytest.raises(ConfigError, match=r"low > 0"):
        speech.perturbation({"speed": [0, 1]})
