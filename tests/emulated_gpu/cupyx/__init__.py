"""``cupyx`` of the emulated device: pinned host arrays."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

__all__ = ["empty_like_pinned", "empty_pinned", "zeros_like_pinned", "zeros_pinned"]


def empty_pinned(shape: Any, dtype: Any = float, order: str = "C") -> np.ndarray:
    """A numpy array in pinned host memory (an emulated ``cudaHostAlloc`` allocation:
    ``cudaMemcpyAsync`` reads it when the copy runs, not when it is queued)."""
    from cupy.cuda.pinned_memory import alloc_pinned_memory

    shape = (int(shape),) if isinstance(shape, int | np.integer) else tuple(shape)
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    mem = alloc_pinned_memory(nbytes)
    if nbytes == 0:
        return np.empty(shape, dtype, order=order)
    raw = (ctypes.c_ubyte * nbytes).from_address(mem.ptr)
    raw._gdsz_memory = mem  # the array's base keeps the pinned allocation mapped
    return np.ndarray(shape, dtype, buffer=raw, order=order)


def zeros_pinned(shape: Any, dtype: Any = float, order: str = "C") -> np.ndarray:
    a = empty_pinned(shape, dtype, order)
    a[...] = 0
    return a


def empty_like_pinned(a: Any, dtype: Any = None, order: str = "K", subok: Any = None,
                      shape: Any = None) -> np.ndarray:
    return empty_pinned(a.shape if shape is None else shape,
                        a.dtype if dtype is None else dtype, "F" if order == "F" else "C")


def zeros_like_pinned(a: Any, dtype: Any = None, order: str = "K", subok: Any = None,
                      shape: Any = None) -> np.ndarray:
    out = empty_like_pinned(a, dtype, order, subok, shape)
    out[...] = 0
    return out
