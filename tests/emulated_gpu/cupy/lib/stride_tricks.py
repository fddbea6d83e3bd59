"""``cupy.lib.stride_tricks`` of the emulated device."""

from __future__ import annotations

from typing import Any

import numpy as np
from _emucuda import memory as _mem
from _emucuda.errors import Fault as _Fault

__all__ = ["as_strided"]


def as_strided(x: Any, shape: Any = None, strides: Any = None) -> Any:
    """A view of ``x`` with the given shape and strides (no bounds check, as CuPy; a view
    reaching past the allocation faults when device work touches it)."""
    from cupy._core import ndarray

    if not isinstance(x, ndarray):
        raise TypeError(f"Unsupported type {type(x)}")
    shape = tuple(int(n) for n in (x.shape if shape is None else shape))
    strides = tuple(int(s) for s in (x.strides if strides is None else strides))
    out = ndarray._wrap(x._memptr, x._ptr, shape, strides, x.dtype, x._device,
                        x._base if x._base is not None else x)
    lo, hi = out._extent()
    if out.size and _mem.find(lo) is not None and hi > lo:
        try:
            _mem.check(lo, hi - lo, "as_strided view")
        except _Fault:
            pass  # legal to make; an access is what faults
    _ = np
    return out
