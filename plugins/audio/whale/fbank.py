"""Kaldi-style log-mel filterbank features, bit-equal to ``torchaudio.compliance.kaldi.fbank`` in float32.

Why a torch port and not a library: VITA-1.5 computes its audio features with torchaudio, which works in
float32 throughout (float32 FFT, mel banks built from float32 ``torch.arange``). Measured against the golden
features, ``transformers.audio_utils.spectrogram`` (float64) and kaldi-native-fbank (C++) are both ~3e-4 off,
and torchaudio itself cannot be installed beside this torch build. Repeating torchaudio's float32 operations
in the same order gives output bit-equal to torchaudio's on the same machine, so the audio encoder sees the
reference's input. (rfft and mm go through MKL, whose kernels differ by CPU, so on a host other than the one
that made the golden data a few values move by some ulp: 6.7e-6 max, measured on an AMD EPYC AVX2 host.)
Only the options VITA uses are implemented (no VTLN, no energy column, no mean subtraction).
"""

from __future__ import annotations

import math

import torch

from vita_framework.errors import InputError

_EPS = torch.finfo(torch.float32).eps


def _mel(freq: float) -> float:
    return 1127.0 * math.log(1.0 + freq / 700.0)


def _mel_banks(num_bins: int, padded_window: int, sample_frequency: float, low_freq: float, high_freq: float):
    """Triangular filters equally spaced on the mel scale, ``[num_bins, padded_window // 2 + 1]`` float32.

    Built with the same float32 tensor arithmetic as torchaudio's ``get_mel_banks`` (Python-float band edges,
    float32 bin grid); computing them in float64 is what moves other implementations off by ~3e-4.
    """
    nyquist = 0.5 * sample_frequency
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise InputError(f"fbank: bad mel range low_freq={low_freq}, high_freq={high_freq} (nyquist {nyquist})")
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins).unsqueeze(1)
    left = mel_low + index * delta
    center = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    bin_freqs = (sample_frequency / padded_window) * torch.arange(padded_window / 2, dtype=torch.float32)
    mel = (1127.0 * (1.0 + bin_freqs / 700.0).log()).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down))
    banks = torch.nn.functional.pad(banks.to(torch.float32), (0, 1), mode="constant", value=0.0)
    return banks  # the last (Nyquist) FFT bin gets no weight, as in Kaldi


def kaldi_fbank(
    waveform: torch.Tensor,
    *,
    num_mel_bins: int = 80,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    dither: float = 0.0,
    energy_floor: float = 0.0,
    sample_frequency: float = 16000.0,
    preemphasis: float = 0.97,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    remove_dc_offset: bool = True,
    snip_edges: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Log-mel fbank ``[T, num_mel_bins]`` float32 of a 1-D waveform already scaled to the int16 range.

    ``energy_floor`` only matters for the energy column, which VITA does not use; it is accepted so the
    reference's call can be spelled the same. ``dither`` adds ``dither * randn`` noise per frame like Kaldi,
    so features are random unless ``generator`` is seeded.
    """
    del energy_floor
    if waveform.dim() != 1:
        raise InputError(f"fbank: expected a 1-D waveform, got shape {tuple(waveform.shape)}")
    if not snip_edges:
        raise InputError("fbank: only snip_edges=True (the Kaldi default VITA uses) is supported")
    x = waveform.to(torch.float32)
    shift = int(sample_frequency * frame_shift_ms * 0.001)
    size = int(sample_frequency * frame_length_ms * 0.001)
    padded = 1 << (size - 1).bit_length()  # Kaldi's round_to_power_of_two
    n = x.shape[0]
    if n < size:
        raise InputError(
            f"audio too short for fbank: {n} samples, one {frame_length_ms:g} ms frame needs at least {size}"
        )
    frames_count = 1 + (n - size) // shift
    x = x.contiguous()
    frames = x.as_strided((frames_count, size), (shift * x.stride(0), x.stride(0)))
    if dither != 0.0:
        noise = torch.randn(frames.shape, generator=generator, dtype=frames.dtype, device=frames.device)
        frames = frames + noise * dither
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1).unsqueeze(1)
    if preemphasis != 0.0:
        previous = torch.nn.functional.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)
        frames = frames - preemphasis * previous[:, :-1]
    window = torch.hann_window(size, periodic=False, dtype=torch.float32, device=frames.device).pow(0.85)
    frames = frames * window.unsqueeze(0)
    if padded != size:
        frames = torch.nn.functional.pad(frames.unsqueeze(0), (0, padded - size), mode="constant", value=0.0)
        frames = frames.squeeze(0)
    power = torch.fft.rfft(frames).abs().pow(2.0)
    banks = _mel_banks(num_mel_bins, padded, sample_frequency, low_freq, high_freq).to(frames.device)
    energies = torch.mm(power, banks.T)
    return torch.max(energies, torch.tensor(_EPS, device=frames.device)).log()
