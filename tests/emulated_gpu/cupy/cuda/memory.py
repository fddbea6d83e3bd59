"""``cupy.cuda.memory`` of the emulated device: allocations, pointers, pools."""

from __future__ import annotations

import threading
from typing import Any

from _emucuda import memory as _mem
from _emucuda import streams as _streams
from _emucuda.errors import OutOfMemoryError

__all__ = ["BaseMemory", "Memory", "MemoryPointer", "MemoryPool", "OutOfMemoryError",
           "PinnedMemory", "PinnedMemoryPointer", "PinnedMemoryPool", "alloc",
           "alloc_pinned_memory", "get_allocator", "set_allocator", "set_pinned_memory_allocator"]


class BaseMemory:
    """Memory of one allocation; freed (unmapped) when the last reference goes."""

    def __init__(self, size: int, device_id: int) -> None:
        self._alloc = _mem.allocate(size, device_id)
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


class PinnedMemory(BaseMemory):
    """Pinned host memory (``cudaHostAlloc``)."""

    def __init__(self, size: int, flags: int = 0) -> None:
        super().__init__(size, -1)


def _pool_release(a: _mem.Allocation) -> None:
    _mem.free(a)


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


class PinnedMemoryPointer(MemoryPointer):
    """A pointer into pinned host memory (exposes the buffer protocol through numpy)."""


def _malloc(size: int) -> MemoryPointer:
    return MemoryPointer(Memory(size), 0)


class MemoryPool:
    """The device memory pool: here every allocation is its own mapping (no reuse), so that a
    use after free faults; the accounting is the pool's."""

    def __init__(self, allocator: Any = None) -> None:
        self._limit = 0
        self._lock = threading.Lock()

    def malloc(self, size: int) -> MemoryPointer:
        device = _streams.current_device()
        limit = self._limit
        if limit and _mem.in_use(device) + size > limit:
            raise OutOfMemoryError(size, _mem.in_use(device), limit)
        return _malloc(size)

    def used_bytes(self) -> int:
        return _mem.in_use(_streams.current_device())

    def total_bytes(self) -> int:
        return self.used_bytes()

    def free_bytes(self) -> int:
        return 0

    def free_all_blocks(self, stream: Any = None) -> None:
        """Nothing is cached: freed blocks are unmapped at once."""

    def n_free_blocks(self) -> int:
        return 0

    def set_limit(self, size: int | None = None, fraction: float | None = None) -> None:
        if fraction is not None:
            size = int(_mem.DEVICE_MEMORY * fraction)
        self._limit = int(size or 0)

    def get_limit(self) -> int:
        return self._limit


class PinnedMemoryPool:
    """The pinned memory pool (no reuse, as :class:`MemoryPool`)."""

    def __init__(self, allocator: Any = None) -> None:
        pass

    def malloc(self, size: int) -> PinnedMemoryPointer:
        return PinnedMemoryPointer(PinnedMemory(size), 0)

    def free_all_blocks(self) -> None:
        pass

    def n_free_blocks(self) -> int:
        return 0


_default_pool = MemoryPool()
_default_pinned_pool = PinnedMemoryPool()
_allocator: Any = _default_pool.malloc
_pinned_allocator: Any = _default_pinned_pool.malloc


def alloc(size: int) -> MemoryPointer:
    """Allocate ``size`` bytes on the current device with the current allocator."""
    return _allocator(int(size))


def alloc_pinned_memory(size: int) -> PinnedMemoryPointer:
    return _pinned_allocator(int(size))


def set_allocator(allocator: Any = None) -> None:
    global _allocator
    _allocator = _malloc if allocator is None else allocator


def get_allocator() -> Any:
    return _allocator


def set_pinned_memory_allocator(allocator: Any = None) -> None:
    global _pinned_allocator
    _pinned_allocator = (lambda n: PinnedMemoryPointer(PinnedMemory(n), 0)) \
        if allocator is None else allocator
