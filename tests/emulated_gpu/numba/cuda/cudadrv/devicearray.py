"""``numba.cuda.cudadrv.devicearray`` of the emulated device: ``DeviceNDArray``
(numba-cuda, numba_cuda/numba/cuda/cudadrv/devicearray.py), the parts distributed's GPU
serializers and plain scripts use: construction over given memory, ``__cuda_array_interface__``,
``copy_to_host``, ``copy_to_device``, ``flags``, ``nbytes``. Kernels, indexing and the rest of
numba's device arrays are not emulated."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from numba.cuda.cudadrv import driver as _driver

__all__ = ["DeviceNDArray", "DeviceNDArrayBase", "is_cuda_ndarray"]


def is_cuda_ndarray(obj: Any) -> bool:
    return getattr(obj, "__cuda_ndarray__", False)


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, s = [], itemsize
    for n in reversed(shape):
        strides.append(s)
        s *= max(int(n), 1)
    return tuple(reversed(strides))


def _f_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, s = [], itemsize
    for n in shape:
        strides.append(s)
        s *= max(int(n), 1)
    return tuple(strides)


def _extent(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> int:
    """Bytes from the first to one past the last element (numba's memory_size_from_info)."""
    if any(n == 0 for n in shape):
        return 0
    return sum((n - 1) * abs(s) for n, s in zip(shape, strides, strict=True)) + itemsize


class DeviceNDArrayBase:
    """An on-GPU NDArray."""

    __cuda_memory__ = True
    __cuda_ndarray__ = True

    def __init__(self, shape: Any, strides: Any, dtype: Any, stream: Any = 0,
                 gpu_data: Any = None) -> None:
        if isinstance(shape, int | np.integer):
            shape = (shape,)
        if isinstance(strides, int | np.integer):
            strides = (strides,)
        dtype = np.dtype(dtype)
        shape = tuple(shape)
        strides = tuple(int(s) for s in strides)
        self.ndim = len(shape)
        if len(strides) != self.ndim:
            raise ValueError("strides not match ndim")
        if not all(isinstance(d, int | np.integer) for d in shape):
            raise TypeError("all elements of shape must be ints")
        self.shape = tuple(int(d) for d in shape)
        self.strides = strides
        self.dtype = dtype
        self.size = math.prod(self.shape)
        from numba.cuda import current_context

        if self.size > 0:
            self.alloc_size = _extent(self.shape, self.strides, dtype.itemsize)
            if gpu_data is None:
                gpu_data = current_context().memalloc(self.alloc_size)
            elif gpu_data.size < self.alloc_size:
                raise ValueError(f"gpu_data holds {gpu_data.size} bytes, the array needs "
                                 f"{self.alloc_size}")
        else:
            gpu_data = _driver.MemoryPointer(current_context(), 0, 0)
            self.alloc_size = 0
        self.gpu_data = gpu_data
        self.stream = stream

    @property
    def flags(self) -> dict[str, bool]:
        item = self.dtype.itemsize
        return {"C_CONTIGUOUS": self.size <= 1 or self.strides == _c_strides(self.shape, item),
                "F_CONTIGUOUS": self.size <= 1 or self.strides == _f_strides(self.shape, item)}

    def is_c_contiguous(self) -> bool:
        return self.flags["C_CONTIGUOUS"]

    def is_f_contiguous(self) -> bool:
        return self.flags["F_CONTIGUOUS"]

    @property
    def device_ctypes_pointer(self) -> Any:
        return self.gpu_data.device_ctypes_pointer

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        ptr = self.device_ctypes_pointer.value or 0
        contiguous = self.flags["C_CONTIGUOUS"]
        return {
            "shape": tuple(self.shape),
            "strides": None if contiguous else tuple(self.strides),
            "data": (ptr, False),
            "typestr": self.dtype.str,
            "stream": int(self.stream) if self.stream != 0 else None,
            "version": 3,
        }

    @property
    def nbytes(self) -> int:
        return self.dtype.itemsize * self.size

    def _default_stream(self, stream: Any) -> Any:
        return self.stream if not stream else stream

    def copy_to_device(self, ary: Any, stream: Any = 0) -> None:
        """Copy ``ary`` (host or device memory) to ``self``."""
        if ary.size == 0:
            return
        if not (self.flags["C_CONTIGUOUS"] or self.flags["F_CONTIGUOUS"]):
            raise ValueError("Array is not contiguous")
        stream = self._default_stream(stream)
        if _driver.is_device_memory(ary):
            if ary.shape != self.shape or np.dtype(ary.dtype) != self.dtype:
                raise ValueError(f"incompatible shape or dtype: {ary.shape} {ary.dtype}")
            _driver.device_to_device(self, ary, self.alloc_size, stream=stream)
        else:
            host = np.array(ary, order="C" if self.flags["C_CONTIGUOUS"] else "F",
                            dtype=ary.dtype, copy=None)
            if host.shape != self.shape or host.dtype != self.dtype:
                raise ValueError(f"incompatible shape or dtype: {host.shape} {host.dtype}")
            _driver.host_to_device(self, host, self.alloc_size, stream=stream)

    def copy_to_host(self, ary: np.ndarray | None = None, stream: Any = 0) -> np.ndarray:
        """Copy ``self`` to ``ary`` or a new numpy array (synchronous on the default stream)."""
        if any(s < 0 for s in self.strides):
            raise NotImplementedError(f"D->H copy not implemented for negative strides: "
                                      f"{self.strides}")
        stream = self._default_stream(stream)
        if ary is None:
            hostary = np.empty(shape=self.alloc_size, dtype=np.byte)
        else:
            if ary.shape != self.shape or ary.dtype != self.dtype:
                raise ValueError(f"incompatible shape or dtype: {ary.shape} {ary.dtype}")
            hostary = ary
        if self.alloc_size:
            _driver.device_to_host(hostary, self, self.alloc_size, stream=stream)
        if ary is None:
            if self.size == 0:
                return np.ndarray(shape=self.shape, dtype=self.dtype, buffer=hostary)
            return np.ndarray(shape=self.shape, dtype=self.dtype, strides=self.strides,
                              buffer=hostary)
        return hostary

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return (f"<numba.cuda.cudadrv.devicearray.DeviceNDArray shape={self.shape} "
                f"dtype={self.dtype} (emulated)>")


class DeviceNDArray(DeviceNDArrayBase):
    """An on-GPU array type."""
