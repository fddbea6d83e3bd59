"""``cupy.cuda.memory`` of the emulated device: allocations, pointers, pools."""

from __future__ import annotations

import collections
import threading
from typing import Any

from _emucuda import memory as _mem
from _emucuda import streams as _streams
from _emucuda.errors import OutOfMemoryError

__all__ = ["BaseMemory", "Memory", "MemoryPointer", "MemoryPool", "OutOfMemoryError", "alloc",
           "get_allocator", "set_allocator"]


class BaseMemory:
    """One pool block; back to its pool when the last reference goes (see :class:`_Pool`)."""

    def __init__(self, size: int, device_id: int) -> None:
        self._alloc = _POOL.take(int(size), int(device_id))
        self.size = int(size)
        self.device_id = int(device_id)
        self.ptr = self._alloc.ptr

    @property
    def device(self) -> Any:
        from cupy.cuda.device import Device

        return Device(self.device_id)

    def __del__(self) -> None:
        a = getattr(self, "_alloc", None)
        if a is not None:
            _pool_release(a)


class Memory(BaseMemory):
    """Device memory (``cudaMalloc``)."""

    def __init__(self, size: int) -> None:
        device = _streams.current_device()
        _streams.check_alive(device)
        super().__init__(size, device)


class _Pool:
    """Freed blocks, handed out again as CuPy's pools do.

    Device blocks are reused only by allocations on the stream they were allocated on (CuPy's
    pool is stream-ordered): queued work that still uses a block runs before the new owner's
    work on that stream, but a writer outside stream order (kvikio, the host) races with it,
    as on hardware. Pinned blocks are reused by the next allocation of the size at once,
    whatever copy may still read them (CuPy's pinned pool does not wait either). Blocks with
    queued work are never unmapped; idle ones are when the pool holds too much or on
    ``free_all_blocks``.
    """

    MAX_CACHED = 1 << 30

    def __init__(self) -> None:
        self._lock = threading.RLock()  # a __del__ may return a block while we hold it
        self._free: dict[tuple[int, int, int], list[_mem.Allocation]] = {}
        self._cached = 0

    @staticmethod
    def _key(capacity: int, device: int) -> tuple[int, int, int]:
        stream = _streams.pool_stream(device) if device >= 0 else 0
        return (device, capacity, stream)

    def take(self, size: int, device: int) -> _mem.Allocation:
        self.drain()
        if size == 0:
            return _mem.allocate(0, device)
        capacity = -(-size // _mem.GRANULE) * _mem.GRANULE
        with self._lock:
            blocks = self._free.get(self._key(capacity, device))
            if blocks:
                a = blocks.pop()
                self._cached -= a.capacity
                a.size = size
                a.site = _mem._site()
                return a
        try:
            return _mem.allocate(size, device)
        except OutOfMemoryError:
            self.free_all_blocks(device)  # as CuPy: drop the cache, then try once more
            return _mem.allocate(size, device)

    def drain(self) -> None:
        """Take in the blocks released by ``__del__`` since the last call (a finalizer may run
        in the middle of any allocation: it only queues the block)."""
        while _released:
            a = _released.popleft()
            self.give(a, a.stream)

    def give(self, a: _mem.Allocation, stream: int) -> None:
        if a.capacity == 0 or a.freed:
            return
        with self._lock:
            self._free.setdefault((a.device, a.capacity, stream), []).append(a)
            self._cached += a.capacity
            over = self._cached > self.MAX_CACHED
        if over:
            self.free_all_blocks(None)

    def free_all_blocks(self, device: int | None) -> None:
        self.drain()
        with self._lock:
            idle = []
            for key, blocks in self._free.items():
                if device is not None and key[0] != device:
                    continue
                keep = [a for a in blocks if a.pending]
                idle += [a for a in blocks if not a.pending]
                blocks[:] = keep
            self._cached -= sum(a.capacity for a in idle)
        for a in idle:
            _mem.free(a)

    def cached(self, device: int) -> int:
        """Bytes in free blocks of ``device`` (-1: pinned)."""
        with self._lock:
            return sum(a.capacity for k, v in self._free.items() if k[0] == device for a in v)

    def free_blocks(self, device: int) -> int:
        """Free blocks of ``device`` (-1: pinned)."""
        with self._lock:
            return sum(len(v) for k, v in self._free.items() if k[0] == device)


_POOL = _Pool()


_released: collections.deque[_mem.Allocation] = collections.deque()


def _pool_release(a: _mem.Allocation) -> None:
    _released.append(a)  # atomic: safe from a finalizer


class MemoryPointer:
    """A pointer into a :class:`BaseMemory`: ``ptr = mem.ptr + offset``."""

    def __init__(self, mem: BaseMemory, offset: int) -> None:
        self.mem = mem
        self.device_id = mem.device_id
        self.ptr = mem.ptr + int(offset)

    @property
    def device(self) -> Any:
        return self.mem.device

    def __int__(self) -> int:
        return self.ptr

    def __add__(self, offset: int) -> MemoryPointer:
        return MemoryPointer(self.mem, self.ptr - self.mem.ptr + int(offset))

    def __iadd__(self, offset: int) -> MemoryPointer:
        self.ptr += int(offset)
        return self

    def __sub__(self, offset: int) -> MemoryPointer:
        return self + (-int(offset))

    def __isub__(self, offset: int) -> MemoryPointer:
        self.ptr -= int(offset)
        return self

    def copy_from_device(self, src: MemoryPointer, size: int) -> None:
        from cupy.cuda import runtime

        runtime.memcpy(self.ptr, src.ptr, size, runtime.memcpyDeviceToDevice)

    def copy_from_host(self, mem: Any, size: int) -> None:
        from cupy.cuda import runtime

        runtime.memcpy(self.ptr, int(getattr(mem, "value", mem) or 0), size,
                       runtime.memcpyHostToDevice)

    def copy_to_host(self, mem: Any, size: int) -> None:
        from cupy.cuda import runtime

        runtime.memcpy(int(getattr(mem, "value", mem) or 0), self.ptr, size,
                       runtime.memcpyDeviceToHost)

    def memset(self, value: int, size: int) -> None:
        from cupy.cuda import runtime

        runtime.memset(self.ptr, value, size)

    def memset_async(self, value: int, size: int, stream: Any = None) -> None:
        from cupy.cuda import runtime

        runtime.memsetAsync(self.ptr, value, size,
                            _streams.current_stream() if stream is None else stream.ptr)


def _malloc(size: int) -> MemoryPointer:
    return MemoryPointer(Memory(size), 0)


class MemoryPool:
    """The device memory pool: here every allocation is its own mapping (no reuse), so that a
    use after free faults; the accounting is the pool's."""

    def __init__(self, allocator: Any = None) -> None:
        self._limit = 0
        self._lock = threading.RLock()  # a __del__ may return a block while we hold it

    def malloc(self, size: int) -> MemoryPointer:
        device = _streams.current_device()
        limit = self._limit
        if limit and _mem.in_use(device) + size > limit:
            raise OutOfMemoryError(size, _mem.in_use(device), limit)
        return _malloc(size)

    def used_bytes(self) -> int:
        d = _streams.current_device()
        return _mem.in_use(d) - _POOL.cached(d)

    def total_bytes(self) -> int:
        return _mem.in_use(_streams.current_device())

    def free_bytes(self) -> int:
        return _POOL.cached(_streams.current_device())

    def free_all_blocks(self, stream: Any = None) -> None:
        """Unmap the cached blocks no queued work uses."""
        _POOL.free_all_blocks(_streams.current_device())

    def n_free_blocks(self) -> int:
        return _POOL.free_blocks(_streams.current_device())

    def set_limit(self, size: int | None = None, fraction: float | None = None) -> None:
        if fraction is not None:
            size = int(_mem.DEVICE_MEMORY * fraction)
        self._limit = int(size or 0)

    def get_limit(self) -> int:
        return self._limit


_default_pool = MemoryPool()
_allocator: Any = _default_pool.malloc


def alloc(size: int) -> MemoryPointer:
    """Allocate ``size`` bytes on the current device with the current allocator."""
    return _allocator(int(size))


def set_allocator(allocator: Any = None) -> None:
    global _allocator
    _allocator = _malloc if allocator is None else allocator


def get_allocator() -> Any:
    return _allocator
