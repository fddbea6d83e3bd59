"""Peak memory of one read: host RSS high-water mark, Python allocations, CuPy device memory.

What the numbers mean (also in the README and each results file):

* ``peak RSS`` is the process's resident-set high-water mark during the read minus its resident
  set just before it. The kernel's mark (``VmHWM``) is reset first by writing ``5`` to
  ``/proc/self/clear_refs``, so it covers native allocations too (Rust, C++, thread stacks,
  decoder buffers) and includes the output array. Each reader runs in its own process, so one
  reader's caches and pools never count against another. Freed memory that the allocator keeps
  is not counted again; pages touched for the first time are.
* ``peak traced`` is :mod:`tracemalloc`'s peak of Python-allocated memory (NumPy arrays
  included) during the same read: the share of the peak that Python code allocated.
* ``peak device`` is the highest ``used_bytes()`` of CuPy's default memory pool during the
  read, minus its value before; allocations outside CuPy's pool (nvCOMP's own scratch, for
  one) are not seen.

The memory run is an extra, untimed repetition: tracemalloc slows Python allocations.
"""

from __future__ import annotations

import gc
import tracemalloc
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = ["DeviceMemoryTracker", "MemoryProbe", "MemoryUse"]


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's RSS high-water mark of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class MemoryUse:
    """Peaks of one read, in bytes; None where the platform cannot tell."""

    rss_peak: int | None
    traced_peak: int | None
    device_peak: int | None


class DeviceMemoryTracker:
    """Tracks the peak of CuPy's default pool by wrapping its allocator.

    The peak can only rise when memory is allocated, so reading ``used_bytes()`` after every
    allocation finds it exactly, at the cost of one call per allocation.
    """

    def __init__(self) -> None:
        import cupy

        self._cupy = cupy
        self._pool = cupy.get_default_memory_pool()
        self.base = self.peak = self._pool.used_bytes()
        cupy.cuda.set_allocator(self._malloc)

    def _malloc(self, size: int) -> Any:
        mem = self._pool.malloc(size)
        used = self._pool.used_bytes()
        if used > self.peak:
            self.peak = used
        return mem

    def reset(self) -> None:
        """Start a new measurement from the pool's current use."""
        self.base = self.peak = self._pool.used_bytes()

    @property
    def delta(self) -> int:
        """Peak above the use at the last :meth:`reset`."""
        return self.peak - self.base


class MemoryProbe:
    """Context manager measuring one read: ``with MemoryProbe(tracker) as p: ...; p.result``."""

    def __init__(self, device_tracker: DeviceMemoryTracker | None = None) -> None:
        self._device = device_tracker
        self.result = MemoryUse(None, None, None)

    def __enter__(self) -> MemoryProbe:
        gc.collect()
        self._hwm_ok = _reset_hwm()
        self._rss0 = _status_kib("VmRSS")
        if self._device is not None:
            self._device.reset()
        tracemalloc.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        hwm = _status_kib("VmHWM")
        rss = None
        if self._hwm_ok and hwm is not None and self._rss0 is not None:
            rss = max(0, hwm - self._rss0) * 1024
        device = self._device.delta if self._device is not None else None
        self.result = MemoryUse(rss, traced, device)
