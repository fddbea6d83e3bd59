"""``numba.cuda.cudadrv.driver`` of the emulated device: contexts and device memory
(numba-cuda, numba_cuda/numba/cuda/cudadrv/driver.py), for what ``DeviceNDArray`` needs.

Memory from ``Context.memalloc`` is an emulated ``cuMemAlloc`` (no pool; freed when the last
``MemoryPointer`` referring to it goes, after the work queued on it has run, as ``cuMemFree``
synchronizes). Copies are the emulated CUDA runtime's checked, synchronous ``cudaMemcpy``.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
from _emucuda import memory as _mem
from _emucuda import streams as _streams

__all__ = [
    "Context",
    "MemoryPointer",
    "device_pointer",
    "device_to_device",
    "device_to_host",
    "host_to_device",
    "is_device_memory",
]


class _Owned:
    """An allocation made by ``memalloc``; unmapped when collected."""

    def __init__(self, alloc: _mem.Allocation) -> None:
        self.alloc = alloc

    def __del__(self) -> None:
        a = getattr(self, "alloc", None)
        if a is None or a.freed:
            return
        if a.pending:
            _streams.synchronize_device(a.device)
        _mem.free(a)


class MemoryPointer:
    """Device memory: ``device_pointer`` (an int, as ``CUdeviceptr``), ``size``, and an
    ``owner`` that keeps it alive (a ``memalloc`` block, or the object an external pointer came
    from)."""

    __cuda_memory__ = True

    def __init__(self, context: Context, pointer: int, size: int, owner: Any = None,
                 finalizer: Any = None) -> None:
        self.context = context
        self.device_pointer = int(pointer)
        self.size = int(size)
        self._cuda_memsize_ = int(size)
        self.owner = owner
        self.handle = self.device_pointer

    @property
    def device_ctypes_pointer(self) -> ctypes.c_void_p:
        return ctypes.c_void_p(self.device_pointer or None)

    @property
    def device_pointer_value(self) -> int:
        return self.device_pointer

    def view(self, start: int, stop: int | None = None) -> MemoryPointer:
        stop = self.size if stop is None else stop
        if not 0 <= start <= stop <= self.size:
            raise IndexError(f"view [{start}, {stop}) out of a {self.size}-byte allocation")
        return MemoryPointer(self.context, self.device_pointer + start, stop - start,
                             owner=self)


class Context:
    """The (primary) context of one device."""

    def __init__(self, device_id: int) -> None:
        self.device_id = int(device_id)

    @property
    def device(self) -> Any:
        from numba.cuda import _Device

        return _Device(self.device_id)

    def memalloc(self, bytesize: int) -> MemoryPointer:
        _streams.check_alive(self.device_id)
        a = _mem.allocate(int(bytesize), self.device_id)
        return MemoryPointer(self, a.ptr, int(bytesize), owner=_Owned(a))

    def get_memory_info(self) -> tuple[int, int]:
        used = _mem.in_use(self.device_id)
        return _mem.DEVICE_MEMORY - used, _mem.DEVICE_MEMORY

    def synchronize(self) -> None:
        _streams.synchronize_device(self.device_id)

    def __repr__(self) -> str:
        return f"<CUDA context of device {self.device_id} (emulated)>"


def is_device_memory(obj: Any) -> bool:
    return getattr(obj, "__cuda_memory__", False)


def device_pointer(obj: Any) -> int:
    if isinstance(obj, MemoryPointer):
        return obj.device_pointer
    return obj.gpu_data.device_pointer if obj.gpu_data is not None else 0


def _memcpy(dst: int, src: int, size: int, kind: int, stream: Any) -> None:
    if stream not in (0, None):
        raise NotImplementedError("emulated numba.cuda: copies on a stream other than the "
                                  "default one are not modelled")
    from cupy.cuda import runtime

    runtime.memcpy(dst, src, size, kind)


def host_to_device(dst: Any, src: np.ndarray, size: int, stream: Any = 0) -> None:
    if size:
        _memcpy(device_pointer(dst), src.ctypes.data, size, 1, stream)


def device_to_host(dst: np.ndarray, src: Any, size: int, stream: Any = 0) -> None:
    if size:
        _memcpy(dst.ctypes.data, device_pointer(src), size, 2, stream)


def device_to_device(dst: Any, src: Any, size: int, stream: Any = 0) -> None:
    if size:
        _memcpy(device_pointer(dst), device_pointer(src), size, 3, stream)
