"""Host staging buffers reused across batches, mapped outside malloc's arenas, bounded.

A batch's encoded bytes (and, on the GPU path, its pinned bounce buffer and the rows the CPU
decodes) are one buffer of megabytes, allocated in whichever worker thread reads the batch and
freed in another. glibc serves such a size from the allocating thread's arena once a free has
raised its dynamic mmap threshold (to the size freed, up to 32 MiB), and arenas keep what they
hold: a 1.5 GiB read at a 64 MiB ``memory_budget`` peaked 116-177 MiB above its output and kept
it after the read (2-core VM; 24-29 MiB with ``MALLOC_MMAP_THRESHOLD_`` fixed, which stops the
threshold moving; 24 MiB with this pool). A fresh mapping per batch avoids the arenas but pays
a page fault per 4 KiB (there 0.9 ms per MiB: 9.7 ms to fill a new 11 MiB buffer, 0.35 ms to
refill a used one; that read took 2.50 s instead of 2.04 s).

So staging buffers of at least ``min_bytes`` come from a :class:`HostPool` of blocks it maps
itself (anonymous private ``mmap``; for the GPU path, pinned with ``cudaHostAlloc``), handed out
again to later batches and reads. A block returns to the pool when the last array over it is
gone (a ``weakref.finalize`` on the array: views keep it alive). Free blocks stay mapped:

* at most a quarter of ``memory_budget`` plus 1 MiB (the setting when the block was taken),
  oldest dropped first: a batch costs at most half the budget, encoded plus decoded, so one
  batch's encoded bytes stay for the next batch, and a read ends holding no more than that.
  The 1.5 GiB read at the default 1 GiB budget peaked 331 MiB above its output against 234 MiB
  keeping nothing, and took 1.68 s against 2.08 s (the whole budget kept: up to 494 MiB;
  benchmarks/results/2026-12-08_021454_amd-epyc-2c_cpu_rss.md);
* not when a request finds no free block large enough: those that are too small are dropped
  before a new block is mapped, so the pool never holds more than the most its callers held at
  once, plus one block;
* for :data:`IDLE_SECONDS` after their last use, then a timer unmaps them: an idle process
  gives the memory back.
"""

from __future__ import annotations

import functools
import mmap
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gds_zarr import settings

__all__ = ["IDLE_SECONDS", "MIN_BYTES", "HostPool", "host_empty", "pinned_empty", "pinned_pool",
           "staging_pool"]

#: Seconds a free block stays mapped after its last use.
IDLE_SECONDS = 1.0
#: Below this, buffers come from numpy (malloc): small ones are cheap to fault and arenas
#: reuse them well.
MIN_BYTES = 1 << 20
#: Blocks are mapped in multiples of this, with room for a quarter more than asked (pages
#: never touched cost no memory), so batches of nearby sizes share blocks.
_GRANULE = 1 << 20
_HEADROOM = 4  # capacity = size + size // _HEADROOM, rounded up to the granule
_KEEP_SHARE = 4  # free blocks kept: memory_budget // _KEEP_SHARE bytes, plus a granule


@dataclass(eq=False, slots=True)
class _Block:
    """One mapping: ``buffer`` (writable, buffer protocol) over ``capacity`` bytes."""

    buffer: Any
    capacity: int
    pid: int              # the process that mapped it
    resident: int = 0     # most bytes handed out from it: pages that may be resident
    cap: int = 0          # free bytes the pool may keep: from the budget when last taken
    freed_at: float = 0.0


def _mapped(capacity: int) -> Any:
    """An anonymous private mapping (private: a forked child's writes stay its own)."""
    return mmap.mmap(-1, capacity, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


class HostPool:
    """Staging buffers over reused blocks (see the module docstring).

    Parameters
    ----------
    new_block
        Maps ``capacity`` bytes; returns a writable buffer-protocol object over them that keeps
        the mapping alive (released when it is dropped).
    small
        Allocates a buffer below ``min_bytes`` (uint8 array of the size given).
    min_bytes
        Requests below it go to ``small``.
    pinned
        Blocks are resident in full once mapped (page-locked), not as touched: no headroom.
    """

    def __init__(self, new_block: Callable[[int], Any] = _mapped,
                 small: Callable[[int], np.ndarray] | None = None, *,
                 min_bytes: int = MIN_BYTES, pinned: bool = False) -> None:
        self._new_block = new_block
        self._small = small or functools.partial(np.empty, dtype=np.uint8)
        self._min_bytes = min_bytes
        self._pinned = pinned
        # Reentrant: a garbage collection inside a locked section may free an array of ours.
        self._lock = threading.RLock()
        self._free: list[_Block] = []
        self._timer: threading.Timer | None = None
        self._pid = os.getpid()
        _POOLS.add(self)
        self.mapped = 0      # bytes of every block alive, in use or free
        self.peak = 0        # the most bytes mapped at once (since reset_peak)
        self.maps = 0        # blocks mapped since the start
        self.reuses = 0      # requests served by a free block

    def empty(self, nbytes: int) -> np.ndarray:
        """A new uint8 array of ``nbytes``, contents undefined, on a pooled block if large.

        The block goes back to the pool when the array and every view of it are gone; raw
        addresses taken from it (``ctypes.data``) must not outlive them.
        """
        nbytes = int(nbytes)
        if nbytes < self._min_bytes:
            return self._small(nbytes)
        block = self._take(nbytes)
        arr = np.frombuffer(block.buffer, np.uint8, count=nbytes)
        weakref.finalize(arr, self._give_back, block).atexit = False
        return arr

    @property
    def free_bytes(self) -> int:
        """Bytes of the free blocks that may be resident."""
        with self._lock:
            return sum(b.resident for b in self._free)

    def reset_peak(self) -> None:
        """Start :attr:`peak` again from the bytes mapped now."""
        with self._lock:
            self.peak = self.mapped

    def release(self) -> int:
        """Unmap every free block now; the bytes unmapped."""
        with self._lock:
            dropped = self._drop(list(self._free))
        return dropped

    def _take(self, nbytes: int) -> _Block:
        cap = int(settings.get("memory_budget")) // _KEEP_SHARE + _GRANULE
        with self._lock:
            fits = [b for b in self._free if b.capacity >= nbytes]
            if fits:
                block = min(fits, key=lambda b: b.capacity)
                self._free.remove(block)
                self.reuses += 1
            else:
                # Every free block is too small: unmapped, or they would pile up as sizes grow.
                self._drop(list(self._free))
                block = None
        if block is None:
            # Mapped outside the lock: cudaHostAlloc of a large block takes milliseconds.
            room = 0 if self._pinned else nbytes // _HEADROOM
            capacity = -(-(nbytes + room) // _GRANULE) * _GRANULE
            block = _Block(self._new_block(capacity), capacity, os.getpid())
            with self._lock:
                self.mapped += capacity
                self.peak = max(self.peak, self.mapped)
                self.maps += 1
        block.resident = block.capacity if self._pinned else max(block.resident, nbytes)
        block.cap = cap
        return block

    def _give_back(self, block: _Block) -> None:
        with self._lock:
            if block.pid != self._pid:
                self._orphan([block])  # the parent's, in a forked child: not this pool's
                return
            block.freed_at = time.monotonic()
            self._free.append(block)
            held = sum(b.resident for b in self._free)
            over = []
            for b in sorted(self._free, key=lambda b: b.freed_at):
                if held <= block.cap:
                    break
                over.append(b)
                held -= b.resident
            self._drop(over)
            if self._free and self._timer is None:
                self._arm(IDLE_SECONDS)

    def _drop(self, blocks: list[_Block]) -> int:
        """Forget ``blocks`` (free ones; under the lock): each unmaps once unreferenced."""
        for b in blocks:
            self._free.remove(b)
            self.mapped -= b.capacity
        return sum(b.capacity for b in blocks)

    def _arm(self, delay: float) -> None:
        self._timer = threading.Timer(delay, self._trim_idle)
        self._timer.name = "gds_zarr-hostpool"  # named as gds_zarr's other threads
        self._timer.daemon = True
        try:
            self._timer.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown": nothing to trim
            self._timer = None

    def _trim_idle(self) -> None:
        """The timer: unmap blocks idle for :data:`IDLE_SECONDS`, re-armed while any is free."""
        with self._lock:
            self._timer = None
            now = time.monotonic()
            self._drop([b for b in self._free if now - b.freed_at >= IDLE_SECONDS])
            if self._free:
                self._arm(min(b.freed_at for b in self._free) + IDLE_SECONDS - now)

    def _after_fork(self) -> None:
        """In a forked child, start empty: the parent's blocks are copies (pinned ones not
        pinned here), its lock may have been held by a thread the child lacks, its timer is
        gone."""
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._orphan(self._free)
        self._free = []
        self._timer = None
        self.mapped = 0

    def _orphan(self, blocks: list[_Block]) -> None:
        """Blocks of the parent, in a forked child: mappings are dropped, pinned ones kept for
        good (freeing them would call CUDA, which a forked child cannot use)."""
        if self._pinned:
            _ORPHANS.extend(blocks)


_POOLS: weakref.WeakSet[HostPool] = weakref.WeakSet()
_ORPHANS: list[_Block] = []


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@functools.cache
def staging_pool() -> HostPool:
    """The process's pool of pageable staging buffers (CPU reads, CPU-decoded rows)."""
    return HostPool()


def host_empty(nbytes: int) -> np.ndarray:
    """A uint8 host staging buffer of ``nbytes`` from :func:`staging_pool`."""
    return staging_pool().empty(nbytes)


def _pinned_block(capacity: int) -> Any:
    import ctypes

    import cupy

    mem = cupy.cuda.PinnedMemory(capacity, cupy.cuda.runtime.hostAllocPortable)
    # PinnedMemory has no public address in CuPy (a cdef class): a pointer to its start does.
    head = cupy.cuda.PinnedMemoryPointer(mem, 0)
    raw = (ctypes.c_ubyte * capacity).from_address(head.ptr)
    raw._gds_zarr_memory = head  # type: ignore[attr-defined]  # holds mem: freed with the block
    return raw


def _small_pinned(nbytes: int) -> np.ndarray:
    import cupyx

    return cupyx.empty_pinned((nbytes,), np.uint8)


@functools.cache
def pinned_pool() -> HostPool:
    """The process's pool of pinned host buffers (the GPU path's bounce buffers); below
    :data:`MIN_BYTES`, CuPy's pinned pool serves them."""
    return HostPool(_pinned_block, _small_pinned, pinned=True)


def pinned_empty(nbytes: int) -> np.ndarray:
    """A uint8 pinned host buffer of ``nbytes`` from :func:`pinned_pool`."""
    return pinned_pool().empty(nbytes)
