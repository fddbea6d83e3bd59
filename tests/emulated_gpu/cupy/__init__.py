"""CuPy on the emulated CUDA device (a test double: see tests/emulated_gpu/README.md).

Put ``tests/emulated_gpu`` first on ``PYTHONPATH`` and ``import cupy`` gives this module. It
follows CuPy 14's API for what gds_zarr, zarr's GPU buffers and common scripts use; arrays
live in emulated device memory that host code cannot read, and device work is queued on
streams (see ``_emucuda``).
"""

from __future__ import annotations

import builtins  # the module defines any, all, sum... as CuPy does
import inspect
import sys as _sys
from typing import Any

import numpy as _np
from _emucuda import memory as _mem
from _emucuda import streams as _streams
from numpy import (  # noqa: F401 - CuPy re-exports numpy's scalar types and constants
    bool_,
    byte,
    cdouble,
    complex64,
    complex128,
    csingle,
    double,
    e,
    float16,
    float32,
    float64,
    half,
    inf,
    int8,
    int16,
    int32,
    int64,
    int_,
    intc,
    intp,
    longlong,
    nan,
    newaxis,
    pi,
    short,
    single,
    ubyte,
    uint,
    uint8,
    uint16,
    uint32,
    uint64,
    uintc,
    uintp,
    ulonglong,
    ushort,
)

from cupy import cuda, lib
from cupy._core import _apply, _h2d, _queue, _staged, ndarray
from cupy._kernel import RawKernel, RawModule

__version__ = "14.2.0"
#: Marks the emulated module (real CuPy has no such attribute).
__emulated__ = True

__all__ = [
    "RawKernel", "RawModule", "array", "array_equal", "asarray", "ascontiguousarray",
    "asnumpy", "cuda", "empty", "full", "get_array_module", "lib", "ndarray", "zeros",
]


def is_available() -> bool:
    return _streams.device_count() > 0


def get_default_memory_pool() -> cuda.MemoryPool:
    return cuda.memory._default_pool


def get_default_pinned_memory_pool() -> Any:
    return cuda.pinned_memory._default_pinned_pool


def get_array_module(*args: Any) -> Any:
    for a in args:
        if isinstance(a, ndarray):
            return _sys.modules[__name__]
    return _np


# ---------------------------------------------------------------- creation


def empty(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    return ndarray(shape, dtype, order=order)


def zeros(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    a = ndarray(shape, dtype, order=order)
    a.fill(0)
    return a


def ones(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    a = ndarray(shape, dtype, order=order)
    a.fill(1)
    return a


def full(shape: Any, fill_value: Any, dtype: Any = None, order: str = "C") -> ndarray:
    if dtype is None:
        dtype = _np.asarray(fill_value).dtype
    a = ndarray(shape, dtype, order=order)
    a.fill(fill_value)
    return a


def _like(prototype: Any, dtype: Any, order: str, shape: Any) -> ndarray:
    dt = prototype.dtype if dtype is None else dtype
    sh = prototype.shape if shape is None else shape
    o = "F" if order == "F" or (order in ("A", "K") and isinstance(prototype, ndarray)
                                 and prototype.flags.f_contiguous
                                 and not prototype.flags.c_contiguous) else "C"
    return ndarray(sh, dt, order=o)


def empty_like(prototype: Any, dtype: Any = None, order: str = "K", subok: Any = None,
               shape: Any = None) -> ndarray:
    return _like(prototype, dtype, order, shape)


def zeros_like(a: Any, dtype: Any = None, order: str = "K", subok: Any = None,
               shape: Any = None) -> ndarray:
    out = _like(a, dtype, order, shape)
    out.fill(0)
    return out


def ones_like(a: Any, dtype: Any = None, order: str = "K", subok: Any = None,
              shape: Any = None) -> ndarray:
    out = _like(a, dtype, order, shape)
    out.fill(1)
    return out


def full_like(a: Any, fill_value: Any, dtype: Any = None, order: str = "K", subok: Any = None,
              shape: Any = None) -> ndarray:
    out = _like(a, dtype, order, shape)
    out.fill(fill_value)
    return out


def arange(start: Any, stop: Any = None, step: Any = 1, dtype: Any = None) -> ndarray:
    return _staged(_np.arange(start, stop, step, dtype=dtype) if stop is not None
                   else _np.arange(start, step=step, dtype=dtype))


def linspace(start: Any, stop: Any, num: int = 50, endpoint: bool = True, retstep: bool = False,
             dtype: Any = None, axis: int = 0) -> Any:
    r = _np.linspace(start, stop, num, endpoint, retstep, dtype, axis)
    return (_staged(r[0]), r[1]) if retstep else _staged(r)


def _from_cai(obj: Any) -> ndarray:
    """A view of foreign device memory described by ``__cuda_array_interface__``."""
    from cupy.cuda.memory import MemoryPointer

    cai = obj.__cuda_array_interface__
    shape = tuple(cai["shape"])
    dt = _np.dtype((cai.get("descr") and len(cai["descr"]) > 1 and cai["descr"]) or cai["typestr"])
    ptr = int(cai["data"][0])
    strides = cai.get("strides")
    if strides is None:
        from cupy._core import _c_strides

        strides = _c_strides(shape, dt.itemsize)
    n = int(_np.prod(shape, dtype=_np.int64))
    if n == 0:
        return ndarray(shape, dt)
    a = _mem.find(ptr)
    if a is None or a.device < 0:
        raise ValueError(f"__cuda_array_interface__ of {type(obj).__name__} points at 0x{ptr:x},"
                         f" which is not device memory ({_mem.describe(ptr)})")
    mem = _Foreign(a, obj)
    return ndarray._wrap(MemoryPointer(mem, 0), ptr, shape, tuple(strides), dt, a.device, None)


class _Foreign:
    """Memory owned by another library's object (kept alive by the arrays that view it)."""

    def __init__(self, alloc: _mem.Allocation, owner: Any) -> None:
        self._alloc = alloc
        self.ptr = alloc.ptr
        self.size = alloc.size
        self.device_id = alloc.device
        self.owner = owner

    @property
    def device(self) -> Any:
        return cuda.Device(self.device_id)


def _to_device(a: Any, dtype: Any, order: Any, copy: Any) -> ndarray:
    if isinstance(a, ndarray):
        if dtype is not None and _np.dtype(dtype) != a.dtype:
            return a.astype(dtype)
        if copy:
            return a.copy()
        return a
    if hasattr(a, "__cuda_array_interface__"):
        out = _from_cai(a)
        if dtype is not None and _np.dtype(dtype) != out.dtype:
            return out.astype(dtype)
        return out.copy() if copy else out
    if isinstance(a, list | tuple) and builtins.any(isinstance(x, ndarray) for x in a):
        stacked = globals()["stack"](a)
        return stacked if dtype is None else stacked.astype(dtype)
    host = _np.asarray(a, dtype=dtype, order="F" if order == "F" else None)
    if not (host.flags.c_contiguous or host.flags.f_contiguous):
        host = _np.ascontiguousarray(host)
    out = ndarray(host.shape, host.dtype, order="F" if host.flags.f_contiguous
                  and not host.flags.c_contiguous else "C")
    _h2d(out, host, _streams.current_stream(out._device))
    return out


def asarray(a: Any, dtype: Any = None, order: Any = None, *, copy: Any = None,
            blocking: bool = False) -> ndarray:
    out = _to_device(a, dtype, order, copy is True)
    if blocking:
        out.device.synchronize()
    return out


asanyarray = asarray


def array(obj: Any, dtype: Any = None, copy: bool = True, order: str = "K", subok: bool = False,
          ndmin: int = 0, *, blocking: bool = False) -> ndarray:
    out = _to_device(obj, dtype, order, copy)
    while out.ndim < ndmin:
        out = out.reshape((1, *out.shape))
    if blocking:
        out.device.synchronize()
    return out


def ascontiguousarray(a: Any, dtype: Any = None) -> ndarray:
    a = asarray(a, dtype)
    return a if a.flags.c_contiguous else a.copy()


def asfortranarray(a: Any, dtype: Any = None) -> ndarray:
    a = asarray(a, dtype)
    return a if a.flags.f_contiguous else a.copy(order="F")


def frombuffer(*args: Any, **kwargs: Any) -> ndarray:
    return asarray(_np.frombuffer(*args, **kwargs))


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None, *,
            blocking: bool = True) -> _np.ndarray:
    """Copy ``a`` to the host (synchronizing the stream when ``blocking``)."""
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    if hasattr(a, "__cuda_array_interface__"):
        return _from_cai(a).get(stream=stream, order=order, out=out, blocking=blocking)
    r = _np.asarray(a, order=order)
    if out is not None:
        out[...] = r
        return out
    return r


def from_dlpack(array: Any, *, device: Any = None, copy: Any = None) -> ndarray:
    if isinstance(array, ndarray):
        return array.view()
    if hasattr(array, "__cuda_array_interface__"):
        return _from_cai(array)
    raise BufferError(f"emulated cupy: cannot import {type(array).__name__} through DLPack "
                      f"(host memory must be copied with cupy.asarray)")


def fromDlpack(dltensor: Any) -> ndarray:
    return from_dlpack(dltensor)


# ---------------------------------------------------------------- operations


def _signature(params: str) -> inspect.Signature:
    """The signature of ``def f(<params>)`` (CuPy's, for the functions made in bulk here)."""
    scope: dict[str, Any] = {}
    exec(f"def f({params}): pass", scope)
    return inspect.signature(scope["f"])


_UFUNC1 = "x, /, out=None, *, casting='same_kind', dtype=None"
_UFUNC2 = "x1, x2, /, out=None, *, casting='same_kind', dtype=None"
#: CuPy 14.2's parameters of the functions this module makes from numpy's.
_PARAMS = {
    **dict.fromkeys(("abs", "absolute", "bitwise_not", "invert", "ceil", "conj", "conjugate",
                     "cos", "exp", "floor", "isfinite", "isinf", "isnan", "log", "log2",
                     "log10", "logical_not", "negative", "positive", "rint", "sign", "signbit",
                     "sin", "sqrt", "tan", "trunc"), _UFUNC1),
    **dict.fromkeys(("add", "bitwise_and", "bitwise_or", "bitwise_xor", "copysign", "divide",
                     "equal", "floor_divide", "fmax", "fmin", "greater", "greater_equal",
                     "left_shift", "less", "less_equal", "logical_and", "logical_or",
                     "logical_xor", "maximum", "minimum", "mod", "multiply", "nextafter",
                     "not_equal", "power", "remainder", "right_shift", "subtract",
                     "true_divide"), _UFUNC2),
    "matmul": "x1, x2, /, out=None, **kwargs",
    **dict.fromkeys(("all", "any", "amax", "amin", "max", "min"),
                    "a, axis=None, out=None, keepdims=False"),
    **dict.fromkeys(("sum", "prod", "mean", "argmax", "argmin"),
                    "a, axis=None, dtype=None, out=None, keepdims=False"),
    **dict.fromkeys(("std", "var"), "a, axis=None, dtype=None, out=None, ddof=0, keepdims=False"),
    **dict.fromkeys(("cumsum", "cumprod"), "a, axis=None, dtype=None, out=None"),
    "count_nonzero": "a, axis=None",
    **dict.fromkeys(("argsort", "sort"), "a, axis=-1, kind=None"),
    **dict.fromkeys(("around", "round"), "a, decimals=0, out=None"),
    "bincount": "x, weights=None, minlength=None",
    "clip": "a, a_min, a_max, out=None",
    **dict.fromkeys(("concatenate", "stack"),
                    "tup, axis=0, out=None, *, dtype=None, casting='same_kind'"),
    **dict.fromkeys(("hstack", "vstack"), "tup, *, dtype=None, casting='same_kind'"),
    "diff": "a, n=1, axis=-1, prepend=None, append=None",
    "dot": "a, b, out=None",
    "tensordot": "a, b, axes=2",
    "einsum": "subscripts, *operands, dtype=None, optimize=False",
    "isclose": "a, b, rtol=1e-05, atol=1e-08, equal_nan=False",
    "isin": "element, test_elements, assume_unique=False, invert=False",
    "nan_to_num": "x, copy=True, nan=0.0, posinf=None, neginf=None",
    **dict.fromkeys(("packbits", "unpackbits"), "a, axis=None, bitorder='big'"),
    "repeat": "a, repeats, axis=None",
    "roll": "a, shift, axis=None",
    "searchsorted": "a, v, side='left', sorter=None",
    "take": "a, indices, axis=None, out=None",
    "tile": "A, reps",
    "where": "condition, x=None, y=None",
    **dict.fromkeys(("argwhere", "nonzero", "flatnonzero"), "a"),
    "unique": ("ar, return_index=False, return_inverse=False, return_counts=False, axis=None, "
               "*, equal_nan=True"),
    **dict.fromkeys(("atleast_1d", "atleast_2d"), "*arys"),
    "broadcast_to": "array, shape",
    "diagonal": "a, offset=0, axis1=0, axis2=1",
    "expand_dims": "a, axis",
    "flip": "a, axis=None",
    "moveaxis": "a, source, destination",
    **dict.fromkeys(("real", "imag"), "val"),
    "squeeze": "a, axis=None",
    "swapaxes": "a, axis1, axis2",
    "transpose": "a, axes=None",
}


def _signed(f: Any, name: str) -> Any:
    """``f`` (which takes ``*args, **kwargs`` and hands them to numpy) with CuPy's signature."""
    params = _PARAMS.get(name)
    if params is not None:
        sig = _signature(params)

        def g(*args: Any, **kwargs: Any) -> Any:
            sig.bind(*args, **kwargs)  # CuPy's parameters, CuPy's TypeError on others
            return f(*args, **kwargs)

        g.__signature__ = sig  # type: ignore[attr-defined]
        g.__name__ = g.__qualname__ = name
        g.__doc__ = f.__doc__
        return g
    return f


def _wrap(np_func: Any, name: str | None = None) -> Any:
    def f(*args: Any, **kwargs: Any) -> Any:
        out = kwargs.pop("out", None)
        res = _apply(lambda *a: np_func(*a, **kwargs), args, what=name or np_func.__name__)
        if out is not None:
            copyto(out, res)
            return out
        return res

    f.__name__ = name or np_func.__name__
    f.__qualname__ = f.__name__
    f.__doc__ = f"``numpy.{np_func.__name__}`` as queued device work."
    return _signed(f, f.__name__)


for _n in (
    # ufuncs
    "add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "mod", "remainder",
    "power", "negative", "positive", "absolute", "abs", "sign", "sqrt", "exp", "log", "log2",
    "log10", "sin", "cos", "tan", "floor", "ceil", "trunc", "rint", "maximum", "minimum", "fmax",
    "fmin", "equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
    "logical_and", "logical_or", "logical_xor", "logical_not", "bitwise_and", "bitwise_or",
    "bitwise_xor", "invert", "bitwise_not", "left_shift", "right_shift", "isnan", "isinf",
    "isfinite", "signbit", "copysign", "nextafter", "conj", "conjugate",
    # reductions and the like
    "sum", "prod", "amax", "amin", "max", "min", "mean", "std", "var", "any", "all",
    "count_nonzero", "argmax", "argmin", "cumsum", "cumprod", "diff", "clip", "around", "round",
    "dot", "tensordot", "einsum", "matmul", "where", "take", "repeat", "tile", "sort",
    "argsort", "searchsorted",
    "concatenate", "stack", "hstack", "vstack", "isin", "isclose", "roll", "bincount",
    "packbits", "unpackbits", "nan_to_num",
):
    globals()[_n] = _wrap(getattr(_np, _n), _n)


def _view_fn(name: str) -> Any:
    """Functions that return a view of their first argument (no device work)."""
    f = getattr(_np, name)

    def g(a: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(a, ndarray):
            raise TypeError(f"Unsupported type {type(a)}")
        return a._view_op(lambda v: f(v, *args, **kwargs))

    g.__name__ = name
    g.__qualname__ = name
    return _signed(g, name)


for _n in ("transpose", "moveaxis", "swapaxes", "squeeze", "expand_dims", "broadcast_to",
           "atleast_1d", "atleast_2d", "real", "imag", "flip", "diagonal"):
    globals()[_n] = _view_fn(_n)


def reshape(a: ndarray, newshape: Any, order: str = "C", *, copy: Any = None) -> ndarray:
    return a.reshape(newshape, order=order, copy=copy)


def ravel(a: ndarray, order: str = "C") -> ndarray:
    return a.ravel(order)


def copyto(dst: ndarray, src: Any, casting: str = "same_kind", where: Any = None) -> None:
    """Copy ``src`` into ``dst`` (queued)."""
    if isinstance(src, _np.ndarray) and src.ndim:
        raise TypeError(f"Unsupported type {type(src)}")
    if isinstance(src, ndarray):
        _queue(lambda d, s: _np.copyto(d, s, casting=casting), (dst, src), "copyto", write=dst)
    else:
        _queue(lambda d: _np.copyto(d, src, casting=casting), (dst,), "copyto", write=dst)


def _host_sized(name: str) -> Any:
    """Functions whose result size depends on the data: CuPy synchronizes to learn it."""
    f = getattr(_np, name)

    def g(a: Any, *args: Any, **kwargs: Any) -> Any:
        r = f(asnumpy(a) if isinstance(a, ndarray) else a, *args, **kwargs)
        return tuple(_staged(x) for x in r) if isinstance(r, tuple) else _staged(_np.asarray(r))

    g.__name__ = name
    return _signed(g, name)


nonzero = _host_sized("nonzero")
flatnonzero = _host_sized("flatnonzero")
unique = _host_sized("unique")
argwhere = _host_sized("argwhere")


def array_equal(a1: Any, a2: Any, equal_nan: bool = False) -> Any:
    return _apply(lambda x, y: _np.asarray(_np.array_equal(x, y, equal_nan=equal_nan)),
                  (asarray(a1), asarray(a2)), what="array_equal")


def allclose(a: Any, b: Any, rtol: float = 1e-05, atol: float = 1e-08,
             equal_nan: bool = False) -> Any:
    return bool(asnumpy(_apply(lambda x, y: _np.asarray(_np.allclose(x, y, rtol, atol,
                                                                     equal_nan)),
                               (asarray(a), asarray(b)), what="allclose")))


def result_type(*arrays_and_dtypes: Any) -> _np.dtype:
    return _np.result_type(*[x.dtype if isinstance(x, ndarray) else x
                             for x in arrays_and_dtypes])


dtype = _np.dtype
can_cast = _np.can_cast
iinfo = _np.iinfo
finfo = _np.finfo
isscalar = _np.isscalar


def ndim(a: Any) -> int:
    # CuPy's own: numpy.ndim of a device array dispatches here (__array_function__).
    return a.ndim if isinstance(a, ndarray) else _np.ndim(a)


def shape(a: Any) -> tuple[int, ...]:
    return tuple(a.shape)


def size(a: Any, axis: Any = None) -> int:
    return a.size if axis is None else a.shape[axis]


def broadcast_arrays(*args: Any) -> list[ndarray]:
    """Views of the arguments broadcast to one shape (scalars and 0-d host arrays are copied to
    the device first, as CuPy does)."""
    arrays = [a if isinstance(a, ndarray) else asarray(a) for a in args]
    shape_ = _np.broadcast_shapes(*(a.shape for a in arrays))
    return [globals()["broadcast_to"](a, shape_) for a in arrays]
