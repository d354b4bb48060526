"""One job's own peak memory, when several jobs run in one process (Hydra's basic launcher, a joblib worker).

``ru_maxrss`` is the peak of the whole process and never falls, so a sweep's second job would report the first
one's peak. :class:`PeakMemory` is started at the job's start and read at its end:

* CUDA in use: ``torch.cuda.max_memory_allocated`` after ``torch.cuda.reset_peak_memory_stats`` at the start
  (summed over the devices);
* Linux: the kernel's peak resident set size (``VmHWM``), reset at the start by writing ``5`` to
  ``/proc/self/clear_refs`` (exact: no peak is missed);
* Linux where that reset is refused: a thread sampling ``/proc/self/statm`` every few milliseconds;
* elsewhere: ``ru_maxrss`` (the process's peak since it started, said so in ``method``).

No torch at import: torch is consulted only once a job has imported it.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from pathlib import Path

_PROC = Path("/proc/self")
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 4096 / 2**20


def _cuda_in_use() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())


def _rss_mb() -> float:
    return int((_PROC / "statm").read_text().split()[1]) * _PAGE_MB


def _hwm_mb() -> float:
    for line in (_PROC / "status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status")


def _reset_hwm() -> None:
    """VmHWM := current RSS (Linux >= 4.0); OSError where /proc or the reset is unavailable."""
    (_PROC / "clear_refs").write_text("5")
    _hwm_mb()


class PeakMemory:
    """Peak memory since :meth:`start`; :attr:`method` says how it was measured."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.method = "ru_maxrss (process peak since start; not reset per job)"
        self._host = "ru_maxrss"
        self._sampled = [0.0]  # one holder per job: a stopping sampler can only write into its own job's holder
        self._stop: threading.Event | None = None

    def start(self) -> None:
        self.stop()
        if _cuda_in_use():
            import torch

            for device in range(torch.cuda.device_count()):
                torch.cuda.reset_peak_memory_stats(device)
        try:
            _reset_hwm()
            self._host = "vmhwm"
            return
        except OSError:
            pass
        try:
            self._sampled = [_rss_mb()]
        except OSError:
            self._host = "ru_maxrss"
            return
        self._host = "sampled"
        self._stop = threading.Event()
        args = (self._stop, self._sampled)
        threading.Thread(target=self._sample, args=args, name="vita-peak-memory", daemon=True).start()

    def _sample(self, stop: threading.Event, holder: list[float]) -> None:
        while not stop.wait(self.interval_s):
            try:
                holder[0] = max(holder[0], _rss_mb())
            except OSError:
                return

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None

    def peak_mb(self) -> float:
        """The peak since :meth:`start` in MiB (GPU memory when CUDA is in use, else host RSS)."""
        if _cuda_in_use():
            import torch

            self.method = "torch.cuda.max_memory_allocated, reset at job start (all devices)"
            return sum(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count())) / 2**20
        if self._host == "vmhwm":
            self.method = "VmHWM (peak RSS), reset at job start via /proc/self/clear_refs"
            return _hwm_mb()
        if self._host == "sampled":
            self.method = f"RSS sampled from /proc/self/statm every {self.interval_s * 1000:.0f} ms during the job"
            self._sampled[0] = max(self._sampled[0], _rss_mb())
            return self._sampled[0]
        self.method = "ru_maxrss (process peak since start; not reset per job)"
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
