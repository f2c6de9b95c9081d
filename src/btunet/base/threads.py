"""How many CPU threads torch and ONNX Runtime use, so a shared machine does not stall them.

Policy (``choose_threads``): one thread per core that other processes leave free, at least one.
PyTorch's OpenMP threads meet at a barrier after every operator, so a thread that shares its core
with another busy process holds all the others back: on 2 cores with one busy competitor, 2
threads ran fine-tuning at 0.30 of its idle speed, 1 thread at more (docs/results_speed.md). The
busy cores are measured, not guessed: the non-idle CPU time of the machine minus this process's
own over a short sample (``CpuLoad``, Linux ``/proc/stat``; elsewhere the load average).

Waiting threads: OpenMP reads ``OMP_WAIT_POLICY`` once, when torch starts its pool (at
``import torch``), so ``btunet`` sets nothing there; the CLI's entry point sets PASSIVE (threads
sleep at barriers instead of spinning on a shared core) before it imports torch unless the user
chose a policy. ONNX Runtime's threads stop spinning too when cores are busy (``spinning_allowed``).
"""
from __future__ import annotations

import math
import os
import time

#: Set by the CLI before torch is imported (an explicit user setting wins).
WAIT_POLICY = "PASSIVE"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def choose_threads(cores: int, busy: float) -> int:
    """Threads for ``cores`` when other processes keep ``busy`` cores busy: the free cores (a core
    more than half busy counts as taken), at least 1, at most ``cores``."""
    taken = math.floor(max(0.0, busy) + 0.5)
    return max(1, min(cores, cores - taken))


def _snapshot() -> tuple[float, float, float] | None:
    """(wall seconds, busy CPU seconds of the whole machine, CPU seconds of this process)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    own = os.times()
    return time.monotonic(), (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), own.user + own.system


class CpuLoad:
    """Cores kept busy by OTHER processes since the last call (Linux; None elsewhere)."""

    def __init__(self) -> None:
        self._last = _snapshot()

    def others(self) -> float | None:
        now = _snapshot()
        if now is None or self._last is None or now[0] - self._last[0] <= 0:
            return None
        (t0, busy0, own0), (t1, busy1, own1) = self._last, now
        self._last = now
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (t1 - t0))


def busy_cores(sample_s: float = 0.2) -> float:
    """Cores other processes keep busy now: sampled over ``sample_s`` seconds on Linux, else the
    1-minute load average."""
    load = CpuLoad()
    time.sleep(sample_s)
    busy = load.others()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (OSError, AttributeError):  # Windows
            busy = 0.0
    return busy


def configure_threads(threads: int | None = None, sample_s: float = 0.2) -> int:
    """Set torch's thread count: ``threads`` if given, else ``choose_threads`` of the cores this
    process may use and the busy ones measured now, never more than torch already uses (one per
    core, or ``OMP_NUM_THREADS``, or what the process set before). Returns the count."""
    import torch
    global _SPINNING
    if threads is None:
        cores = available_cores()
        busy = busy_cores(sample_s)
        threads = min(torch.get_num_threads(), choose_threads(cores, busy))
        _SPINNING = busy < 0.5
    torch.set_num_threads(max(1, int(threads)))
    return torch.get_num_threads()


_SPINNING = True


def spinning_allowed() -> bool:
    """Whether idle ONNX Runtime threads may spin (its default): not after ``configure_threads``
    found other processes keeping a core busy."""
    return _SPINNING


def set_wait_policy() -> None:
    """Ask OpenMP for sleeping (not spinning) idle threads, unless the user chose; only has an
    effect before ``import torch``."""
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


__all__ = ["CpuLoad", "available_cores", "busy_cores", "choose_threads", "configure_threads",
           "set_wait_policy", "spinning_allowed"]
