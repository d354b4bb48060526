"""Spoken questions: the synthetic questions read aloud by the local text-to-speech engine espeak-ng.

The tiny embedded model learns to answer SPOKEN questions, so training needs speech for every question text of
``vita_training.synthetic``. espeak-ng is small, offline and deterministic (the same text, voice, speed and pitch
always give the same samples), so speech is a pure function of ``(text, voice)`` like the rest of the data, and
is cached on disk instead of being shipped.

Training speaks through ``TRAIN_VOICES`` (a fixed grid of English accents, voice variants, speeds and pitches) so
the model cannot tie an answer to one speaker; evaluation uses ``HELDOUT_VOICE``, whose accent and variant occur
in no training voice, so a good held-out score means the model understands the words, not one voice.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import random
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vita_framework.errors import ConfigError

SAMPLE_RATE = 16000  # the whale audio encoder takes 16 kHz mono
# part of every cache key: bump it whenever synthesize() returns different samples for the same inputs
SPEECH_VERSION = "speech-v1"
_SILENCE = 0.005   # |sample| below this is silence (espeak-ng pauses are digital zeros; ~ -46 dBFS)
_MARGIN_S = 0.05   # silence kept before the first and after the last sound, so onsets and decays stay whole
_INSTALL_HINT = ("install it with `apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng`, "
                 "or train for typed questions only (audio=none)")


@dataclass(frozen=True)
class Voice:
    """One espeak-ng speaker: ``name`` is a voice spec (base voice + variant, e.g. ``en-gb+m3``), ``speed`` in
    words per minute (``-s``), ``pitch`` 0-99 (``-p``)."""

    name: str
    speed: int
    pitch: int

    @property
    def key(self) -> str:
        """A stable string naming the voice, e.g. ``en-gb+f2/160/50`` (cache keys and logs)."""
        return f"{self.name}/{self.speed}/{self.pitch}"

    @property
    def base(self) -> str:
        return self.name.split("+", 1)[0]

    @property
    def variant(self) -> str:
        return self.name.split("+", 1)[1] if "+" in self.name else ""


# English accents of espeak-ng's gmw set (never mb/...: mbrola voices need an extra binary and data). espeak-ng
# 1.51 drops the variant of ``en-gb+<variant>`` (``en+<variant>`` keeps it), so the 8 en-gb voices differ only
# in speed and pitch: the grid holds 49 distinct speakers. Kept as is: the shipped bundle was trained on it.
_BASES = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-us-nyc", "en-gb-x-gbcwmd")
_VARIANTS = ("m1", "m2", "m3", "m5", "f1", "f2", "f3", "f5")
_SPEEDS = (130, 160, 190)
_PITCHES = (35, 50, 70)


def _train_voices() -> tuple[Voice, ...]:
    """Every accent with every variant once (56 voices), each with a speed and pitch dealt from a shuffled deck
    that holds every (speed, pitch) pair equally often, so no prosody is tied to one accent or variant."""
    pairs = list(itertools.product(_BASES, _VARIANTS))
    deck = list(itertools.product(_SPEEDS, _PITCHES)) * -(-len(pairs) // (len(_SPEEDS) * len(_PITCHES)))
    random.Random("vita-speech-voices-v1").shuffle(deck)
    return tuple(Voice(f"{b}+{v}", s, p) for (b, v), (s, p) in zip(pairs, deck))


TRAIN_VOICES: tuple[Voice, ...] = _train_voices()
# evaluation only: the Caribbean accent and the f4 variant appear in no training voice, and speed/pitch lie between
# the training values, so held-out scores measure generalisation to an unseen speaker, not to odd prosody
HELDOUT_VOICE = Voice("en-029+f4", 150, 55)


def train_voice(index: int) -> Voice:
    """The voice of the ``index``-th training utterance: a pure function of ``index`` (string-seeded, so it does
    not depend on ``PYTHONHASHSEED``, the process or the machine)."""
    return random.Random(f"voice/{index}").choice(TRAIN_VOICES)


def espeak_binary() -> str:
    """The path of espeak-ng; a ``ConfigError`` saying how to get it when the machine lacks it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise ConfigError(f"spoken-question training needs speech data: espeak-ng is not installed; {_INSTALL_HINT}")
    return path


def espeak_version() -> str:
    """The installed espeak-ng version (e.g. ``1.51``): other versions may speak differently, so caches are
    kept per version."""
    out = subprocess.run([espeak_binary(), "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"(\d+(?:\.\d+)+)", out)
    return match.group(1) if match else "unknown"


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """``text`` spoken by ``voice``: float32 mono samples in [-1, 1] at ``SAMPLE_RATE``, silence trimmed to a
    ``_MARGIN_S`` margin at both ends (so utterance length, and the audio tokens it costs, follows the words)."""
    import soxr

    # the text goes through stdin, not argv, so a text starting with "-" is never read as an option
    cmd = [espeak_binary(), "-v", voice.name, "-s", str(voice.speed), "-p", str(voice.pitch), "--stdout"]
    proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=False)
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0 or not proc.stdout:
        raise ConfigError(f"espeak-ng failed for voice '{voice.key}' (exit status {proc.returncode}): "
                          f"{stderr or 'no output'}; list the installed voices with `espeak-ng --voices=en`")
    with wave.open(io.BytesIO(proc.stdout)) as wav:
        rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
        # espeak-ng streams to stdout, so the header's frame count is a placeholder: read what is there
        raw = wav.readframes(wav.getnframes())
    if width != 2 or channels != 1:
        raise ConfigError(f"espeak-ng voice '{voice.key}' gave {channels}-channel {8 * width}-bit audio; "
                          "expected 16-bit mono")
    pcm = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / np.float32(32768)
    audio = pcm if rate == SAMPLE_RATE else soxr.resample(pcm, rate, SAMPLE_RATE, quality="HQ")
    audio = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    loud = np.flatnonzero(np.abs(audio) >= _SILENCE)
    if loud.size == 0:
        raise ConfigError(f"espeak-ng voice '{voice.key}' produced only silence for {text!r}; is the text empty?")
    margin = int(_MARGIN_S * SAMPLE_RATE)
    return np.ascontiguousarray(audio[max(0, loud[0] - margin): loud[-1] + 1 + margin])


def write_wav(path: str | os.PathLike[str], waveform: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write a mono waveform in [-1, 1] as 16-bit PCM WAV (example question files any player and
    ``vita_framework.media.audio.load_audio`` read back to within 1/32768)."""
    x = np.clip(np.asarray(waveform, dtype=np.float64).reshape(-1), -1.0, 1.0)
    pcm = np.clip(np.round(x * 32768), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(int(rate))
        wav.writeframes(pcm.tobytes())


@dataclass(frozen=True)
class Perturbation:
    """Ranges a training clip is varied over: ``speed`` (a resampling factor: faster and higher together, as a
    tape played fast), ``gain_db`` and ``snr_db`` (white noise that far below the clip's power). Why: 56
    voices x 31 questions is a small set of distinct clips, which the encoder can learn by heart; varying each
    one every time it is drawn asks it to hear words rather than recordings. Measured so far, more voices did
    that better (README), so the shipped recipe leaves it off. ``None`` leaves a quantity alone."""

    speed: tuple[float, float] | None = None
    gain_db: tuple[float, float] | None = None
    snr_db: tuple[float, float] | None = None

    def apply(self, audio: np.ndarray, key: str) -> np.ndarray:
        """``audio`` varied by draws seeded with ``key`` (the same key, the same clip)."""
        import soxr

        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
        out = np.asarray(audio, dtype=np.float32)
        if self.speed is not None:
            factor = rng.uniform(*self.speed)
            out = soxr.resample(out, SAMPLE_RATE * factor, SAMPLE_RATE, quality="HQ").astype(np.float32)
        if self.gain_db is not None:
            out = out * np.float32(10 ** (rng.uniform(*self.gain_db) / 20))
        if self.snr_db is not None:
            power = float(np.mean(out.astype(np.float64) ** 2)) or 1e-10
            sigma = np.sqrt(power / 10 ** (rng.uniform(*self.snr_db) / 10))
            out = out + rng.normal(0.0, sigma, out.shape).astype(np.float32)
        return np.clip(out, -1.0, 1.0).astype(np.float32)


def perturbation(cfg: object | None) -> Perturbation | None:
    """The ``speech.augment`` config block (``speed``, ``gain_db``, ``snr_db``: ``[low, high]`` or null) as a
    :class:`Perturbation`; ``None`` when absent or every range is null."""
    if not cfg:
        return None
    ranges = {}
    for name in ("speed", "gain_db", "snr_db"):
        value = cfg.get(name)  # type: ignore[attr-defined]
        if value is None:
            continue
        low, high = (float(v) for v in value)
        if not low <= high or (name == "speed" and low <= 0):
            raise ConfigError(f"speech.augment.{name} must be [low, high] with low <= high"
                              f"{' and low > 0' if name == 'speed' else ''}; got {list(value)}")
        ranges[name] = (low, high)
    return Perturbation(**ranges) if ranges else None


class SpeechBank:
    """Synthesized questions, kept in memory and as ``.npy`` files under ``cache_dir``.

    A question set has a few dozen texts and a training grid a few dozen voices, so every utterance is made
    once per machine (``prepare``) and then read back; files are written to a temporary name and renamed, so an
    interrupted run never leaves a half-written file behind. ``cache_dir`` defaults to
    ``~/.cache/vita_framework/speech/espeak-ng-<version>/`` (``$XDG_CACHE_HOME`` is honoured).
    """

    def __init__(self, cache_dir: Path | None = None) -> None:
        if cache_dir is None:
            root = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
            cache_dir = root / "vita_framework" / "speech" / f"espeak-ng-{espeak_version()}"
        self.cache_dir = Path(cache_dir)
        self._memory: dict[tuple[str, str], np.ndarray] = {}

    def path(self, text: str, voice: Voice) -> Path:
        """The cache file of ``(text, voice)``: named by a hash, since texts hold characters unfit for names."""
        digest = hashlib.sha256(f"{SPEECH_VERSION}\n{voice.key}\n{text}".encode()).hexdigest()[:32]
        return self.cache_dir / f"{digest}.npy"

    def waveform(self, text: str, voice: Voice) -> np.ndarray:
        """``synthesize(text, voice)``, from memory, else from disk, else made now and stored in both."""
        key = (text, voice.key)
        if key not in self._memory:
            audio = self._load(self.path(text, voice))
            if audio is None:
                audio = self._make(text, voice)
            self._memory[key] = audio
        return self._memory[key]

    def prepare(self, texts: Iterable[str], voices: Iterable[Voice],
                log: Callable[[str], None] | None = None, workers: int | None = None) -> int:
        """Synthesize every ``(text, voice)`` pair not yet on disk (several espeak-ng processes at once); returns
        how many were made. Results go to disk only: ``waveform`` reads them when training needs them."""
        voices = list(voices)
        todo = [(t, v) for t in dict.fromkeys(texts) for v in voices
                if (t, v.key) not in self._memory and not self.path(t, v).is_file()]
        if not todo:
            return 0
        if log is not None:
            log(f"speech: synthesizing {len(todo)} utterances with espeak-ng into {self.cache_dir}")
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for done, _ in enumerate(pool.map(lambda item: self._make(*item), todo), start=1):
                if log is not None and (done % 200 == 0 or done == len(todo)):
                    log(f"speech: {done}/{len(todo)} utterances synthesized")
        return len(todo)

    def _make(self, text: str, voice: Voice) -> np.ndarray:
        audio = synthesize(text, voice)
        path = self.path(text, voice)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, audio)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return audio

    @staticmethod
    def _load(path: Path) -> np.ndarray | None:
        """A cached waveform, or ``None`` when absent or unreadable (then it is simply made again)."""
        try:
            audio = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        return audio if audio.dtype == np.float32 and audio.ndim == 1 and audio.size else None
