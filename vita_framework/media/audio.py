"""Reading user audio (files or in-memory arrays) into a mono float32 waveform, with errors that name the file.

The reference reads audio with ``torchaudio.load``; ``soundfile.read(dtype="float32")`` gives the same
samples (int16 / 32768 exactly for 16-bit PCM), so features computed from it match the golden data.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

_MAX_CHANNELS = 32  # more "channels" than this almost always means a transposed array
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # streaming writers leave the data size unset


def load_audio(source: Any, *, target_rate: int = 16000, max_seconds: float | None = None) -> Any:
    """A path or an ``(array, sample_rate)`` pair -> a 1-D float32 torch tensor at ``target_rate``.

    Numpy arrays are taken in soundfile's ``[frames, channels]`` layout and torch tensors in torchaudio's
    ``[channels, frames]`` layout, so the output of either library can be passed straight in. Channels
    are averaged because the audio encoder takes one channel.
    """
    import torch

    if isinstance(source, tuple) and len(source) == 2:
        data, rate, name = _from_array(*source)
    elif isinstance(source, (str, Path)):
        data, rate, name = _read_file(Path(source).expanduser(), max_seconds)
    else:
        kind = type(source).__name__
        raise InputError(f"audio input must be a file path or an (array, sample_rate) pair, not {kind}")
    if data.shape[0] == 0:
        raise InputError(f"{name} holds no audio samples (0 frames)")
    _check_duration(name, data.shape[0], rate, max_seconds)
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise InputError(f"{name} contains NaN or infinite samples")
    if rate != target_rate:
        import soxr

        mono = soxr.resample(mono, rate, target_rate, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))


def _check_duration(name: str, frames: int, rate: int, max_seconds: float | None) -> None:
    """Refuse long audio early: encoder memory and prompt length grow with it (12.5 tokens per second)."""
    if max_seconds is None:
        return
    seconds = frames / rate
    if seconds > max_seconds:
        raise InputError(
            f"{name} is {seconds:.1f} s long, over the limit of {max_seconds:g} s; "
            f"trim it or raise audio.max_seconds (e.g. audio.max_seconds={math.ceil(seconds)})"
        )


def _from_array(array: Any, rate: Any) -> tuple[np.ndarray, int, str]:
    name = "audio array"
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise InputError(f"{name}: sample rate must be a positive integer, got {rate!r}")
    is_torch = type(array).__module__.startswith("torch")
    data = np.asarray(array.detach().cpu().numpy() if is_torch else array)
    if data.ndim == 1:
        data = data[:, None]
    elif data.ndim == 2:
        data = data.T if is_torch else data
    else:
        raise InputError(f"{name}: expected 1-D or 2-D audio, got shape {data.shape}")
    if data.shape[1] > _MAX_CHANNELS:
        layout = "[channels, frames]" if is_torch else "[frames, channels]"
        raise InputError(f"{name}: {data.shape[1]} channels looks transposed; pass a {layout} array")
    return _to_float(name, data), int(rate), name


def _to_float(name: str, data: np.ndarray) -> np.ndarray:
    """Integer PCM is scaled like soundfile scales it, so arrays and files give the same waveform."""
    if data.dtype == np.int16:
        return data.astype(np.float32) / np.float32(32768)
    if data.dtype == np.int32:
        return (data.astype(np.float64) / 2**31).astype(np.float32)
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32, copy=False)
    raise InputError(f"{name}: unsupported sample type {data.dtype}; use float32, int16 or int32")


def _read_file(path: Path, max_seconds: float | None) -> tuple[np.ndarray, int, str]:
    import soundfile as sf

    name = f"audio file '{path}'"
    if not path.exists():
        raise InputError(f"{name} does not exist")
    if not path.is_file():
        raise InputError(f"{name} is not a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{name} is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile reports through several exception types
        raise InputError(
            f"{name} cannot be read as audio ({_reason(exc)}); it is not a supported audio file or it is "
            "corrupt. Use WAV, FLAC, OGG or MP3 (e.g. ffmpeg -i in.xxx -ac 1 -ar 16000 out.wav)"
        ) from None
    _check_duration(name, info.frames, info.samplerate, max_seconds)
    _check_wav_complete(path, name)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise InputError(f"{name} is corrupt or truncated ({_reason(exc)}); re-export or re-download it") from None
    if info.frames > 0 and data.shape[0] < info.frames:
        raise InputError(
            f"{name} is truncated: its header declares {info.frames} frames but only {data.shape[0]} could be read"
        )
    return data, int(rate), name


def _reason(exc: Exception) -> str:
    """libsndfile's own words, without the "Error opening '<path>': " prefix the caller already says."""
    message = str(exc) or type(exc).__name__
    return message.rsplit("': ", 1)[-1] if message.startswith("Error opening") else message


def _check_wav_complete(path: Path, name: str) -> None:
    """Catch a WAV cut short: libsndfile shrinks the frame count to what is present and reads it silently."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        if handle.read(4) != b"RIFF":
            return
        handle.seek(12)
        while True:
            head = handle.read(8)
            if len(head) < 8:
                return
            chunk_id, chunk_size = head[:4], struct.unpack("<I", head[4:])[0]
            if chunk_id == b"data":
                available = size - handle.tell()
                if chunk_size not in _UNKNOWN_SIZES and available < chunk_size:
                    raise InputError(
                        f"{name} is truncated: its header declares {chunk_size} bytes of audio data but the file "
                        f"holds {available}; re-export or re-download it"
                    )
                return
            handle.seek(chunk_size + (chunk_size & 1), 1)
