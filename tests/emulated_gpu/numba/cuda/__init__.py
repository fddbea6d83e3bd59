"""``numba.cuda`` of the emulated device (numba-cuda's API, numba_cuda/numba/cuda/api.py):
device arrays over emulated device memory and the calls that make them (``to_device``,
``device_array``, ``as_cuda_array``, ``is_cuda_array``), ``current_context``,
``is_available``. Kernels (``@cuda.jit``) are not emulated: the stand-in has no compiler.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from _emucuda import devices as _devices
from _emucuda import streams as _streams

from numba.cuda import cudadrv
from numba.cuda.cudadrv import devicearray, driver
from numba.cuda.cudadrv.devicearray import DeviceNDArray

__all__ = ["as_cuda_array", "cudadrv", "current_context", "device_array", "devicearray",
           "get_current_device", "is_available", "is_cuda_array", "to_device"]


class _Device:
    """``numba.cuda.cudadrv.driver.Device``: ``id``, ``name``, ``compute_capability``."""

    def __init__(self, device_id: int) -> None:
        self.id = int(device_id)
        self.name = _devices.NAME.encode()
        self.compute_capability = _devices.COMPUTE_CAPABILITY
        self.uuid = _devices.physical_of(self.id).uuid

    def __repr__(self) -> str:
        return f"<CUDA device {self.id} '{self.name.decode()}'>"


_contexts: dict[int, driver.Context] = {}


def is_available() -> bool:
    return _devices.count() > 0


def current_context(devnum: int | None = None) -> driver.Context:
    """The context of the current device (or of device ``devnum``, made current)."""
    if devnum is not None:
        _streams.set_current_device(int(devnum))
    d = _streams.current_device()
    if not 0 <= d < _devices.count():
        from _emucuda.errors import runtime_error

        raise runtime_error(101, f"device {d} of {_devices.count()}")
    _devices.note_context(d)
    ctx = _contexts.get(d)
    if ctx is None:
        ctx = _contexts[d] = driver.Context(d)
    return ctx


def get_current_device() -> _Device:
    return _Device(current_context().device_id)


def is_cuda_array(obj: Any) -> bool:
    return hasattr(obj, "__cuda_array_interface__")


def as_cuda_array(obj: Any, sync: bool = True) -> DeviceNDArray:
    """A DeviceNDArray view of an object exporting ``__cuda_array_interface__`` (zero copy)."""
    if not is_cuda_array(obj):
        raise TypeError("*obj* doesn't implement the cuda array interface.")
    desc = obj.__cuda_array_interface__
    shape = tuple(desc["shape"])
    dtype = np.dtype(desc["typestr"])
    strides = desc.get("strides")
    if strides is None:
        strides = devicearray._c_strides(shape, dtype.itemsize)
    size = devicearray._extent(shape, tuple(strides), dtype.itemsize)
    ptr = int(desc["data"][0])
    if size:
        from _emucuda import memory as _mem

        a = _mem.find(ptr)
        if a is None or a.device < 0:
            raise ValueError(f"__cuda_array_interface__ of {type(obj).__name__} points at "
                             f"0x{ptr:x}, which is not device memory ({_mem.describe(ptr)})")
    stream = desc.get("stream")
    if sync and stream is not None:
        # CUDA Array Interface v3: 1 is the legacy default stream, 2 the per-thread one.
        handle = _streams.LEGACY if int(stream) == 1 else int(stream)
        _streams.synchronize(handle, _streams.current_device())
    data = driver.MemoryPointer(current_context(), ptr, size, owner=obj)
    return DeviceNDArray(shape, tuple(strides), dtype, gpu_data=data)


def device_array(shape: Any, dtype: Any = np.float64, strides: Any = None, order: str = "C",
                 stream: Any = 0) -> DeviceNDArray:
    """An uninitialized device array."""
    if isinstance(shape, int | np.integer):
        shape = (int(shape),)
    shape = tuple(shape)
    dtype = np.dtype(dtype)
    if strides is None:
        strides = (devicearray._f_strides if order == "F" else devicearray._c_strides)(
            shape, dtype.itemsize)
    return DeviceNDArray(shape, strides, dtype, stream=stream)


def to_device(obj: Any, stream: Any = 0, copy: bool = True, to: Any = None) -> DeviceNDArray:
    """Copy a host array to a new device array (or into ``to``)."""
    if to is None:
        host = np.asarray(obj)
        if not (host.flags.c_contiguous or host.flags.f_contiguous):
            host = np.ascontiguousarray(host)
        to = DeviceNDArray(host.shape, host.strides, host.dtype, stream=stream)
        if copy:
            to.copy_to_device(host, stream=stream)
        return to
    if copy:
        to.copy_to_device(obj, stream=stream)
    return to
