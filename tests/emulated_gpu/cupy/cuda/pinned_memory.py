"""``cupy.cuda.pinned_memory`` of the emulated device: pinned host allocations and their pool."""

from __future__ import annotations

from typing import Any

from cupy.cuda import memory as _memory

__all__ = ["PinnedMemory", "PinnedMemoryPointer", "PinnedMemoryPool", "alloc_pinned_memory",
           "set_pinned_memory_allocator"]


class PinnedMemory:
    """Pinned host memory (``cudaHostAlloc``): one block of the pinned pool."""

    def __init__(self, size: int, flags: int = 0) -> None:
        # No public attributes, as in CuPy (a cdef class): the address is a PinnedMemoryPointer's.
        self._block = _memory.BaseMemory(size, -1)
        self._size = int(size)


class PinnedMemoryPointer:
    """A pointer into pinned host memory: ``ptr`` is its address, ``mem`` its owner."""

    def __init__(self, mem: PinnedMemory, offset: int) -> None:
        self.mem = mem
        self.ptr = mem._block.ptr + int(offset)
        self._offset = int(offset)

    def size(self) -> int:
        """Bytes from the pointer to the end of its block (a method in CuPy, not a property)."""
        return self.mem._size - self._offset

    def __int__(self) -> int:
        return self.ptr

    def __add__(self, offset: int) -> PinnedMemoryPointer:
        return PinnedMemoryPointer(self.mem, self.ptr - self.mem._block.ptr + int(offset))


def _malloc(size: int) -> PinnedMemoryPointer:
    return PinnedMemoryPointer(PinnedMemory(size), 0)


class PinnedMemoryPool:
    """The pinned memory pool: a freed buffer is handed out again at once (see
    ``cupy.cuda.memory._Pool``)."""

    def __init__(self, allocator: Any = _malloc) -> None:
        self._allocator = allocator

    def malloc(self, size: int) -> PinnedMemoryPointer:
        return self._allocator(int(size))

    def free_all_blocks(self) -> None:
        _memory._POOL.free_all_blocks(-1)

    def n_free_blocks(self) -> int:
        return _memory._POOL.free_blocks(-1)


_default_pinned_pool = PinnedMemoryPool()
_pinned_allocator: Any = _default_pinned_pool.malloc


def alloc_pinned_memory(size: int) -> PinnedMemoryPointer:
    return _pinned_allocator(int(size))


def set_pinned_memory_allocator(allocator: Any = None) -> None:
    global _pinned_allocator
    _pinned_allocator = _malloc if allocator is None else allocator
