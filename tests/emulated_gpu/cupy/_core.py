"""``cupy.ndarray`` of the emulated device, and the machinery that queues its operations.

An array is ``(memory, address of element 0, shape, strides, dtype, device)`` over emulated
device memory. Host code cannot read it: ``numpy.asarray(a)`` raises ``TypeError`` as CuPy
does, and bytes reach the host only through ``get``/``asnumpy`` (which synchronize the stream)
or explicit copies. Every operation that computes (arithmetic, reductions, fancy indexing,
copies, ``astype``) is queued on the current stream and runs at a synchronization point; views
(basic slicing, ``reshape``, ``view``, ``transpose``) are immediate, as on a GPU.

Inside queued work the emulator computes with numpy on views of the device memory
(:meth:`ndarray._host_view`): that is the device "executing", never the user's host code.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from _emucuda import memory as _mem
from _emucuda import streams as _streams
from _emucuda.errors import Fault

__all__ = ["ndarray"]

_NO_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
                "construct a NumPy array explicitly.")


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    out, acc = [], itemsize
    for n in reversed(shape):
        out.append(acc)
        acc *= max(int(n), 1)
    return tuple(reversed(out))


def _norm_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, int | np.integer):
        return (int(shape),)
    return tuple(operator.index(n) for n in shape)


class _Flags:
    def __init__(self, a: ndarray) -> None:
        v = a._meta()
        self.c_contiguous = bool(v.flags.c_contiguous)
        self.f_contiguous = bool(v.flags.f_contiguous)
        self.owndata = a._base is None

    def __getitem__(self, name: str) -> bool:
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name.upper()]

    def __repr__(self) -> str:
        return (f"  C_CONTIGUOUS : {self.c_contiguous}\n  F_CONTIGUOUS : {self.f_contiguous}\n"
                f"  OWNDATA : {self.owndata}")


class _Snap:
    """An array's layout for queued work: builds the numpy view when the work runs."""

    __slots__ = ("alloc", "device", "dtype", "lo", "nbytes", "ptr", "shape", "strides")

    def __init__(self, alloc: Any, lo: int, nbytes: int, ptr: int, shape: tuple[int, ...],
                 strides: tuple[int, ...], dtype: np.dtype, device: int) -> None:
        self.alloc, self.lo, self.nbytes, self.ptr = alloc, lo, nbytes, ptr
        self.shape, self.strides, self.dtype, self.device = shape, strides, dtype, device

    def view(self, what: str) -> np.ndarray:
        if self.nbytes == 0:
            return np.empty(self.shape, self.dtype)
        raw = _mem.view(self.lo, self.nbytes, what, device=self.device)
        return np.ndarray(self.shape, self.dtype, buffer=raw, offset=self.ptr - self.lo,
                          strides=self.strides)


class ndarray:
    """A multi-dimensional array on the emulated device (see the module docstring)."""

    __array_priority__ = 100

    def __init__(self, shape: Any, dtype: Any = float, memptr: Any = None, strides: Any = None,
                 order: str = "C") -> None:
        from cupy.cuda.memory import MemoryPointer, alloc

        shape = _norm_shape(shape)
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if memptr is None:
            memptr = alloc(nbytes)
        if not isinstance(memptr, MemoryPointer):
            raise TypeError(f"memptr must be a MemoryPointer, got {type(memptr).__name__}")
        if strides is None:
            if order == "F":
                strides = tuple(reversed(_c_strides(tuple(reversed(shape)), dtype.itemsize)))
            else:
                strides = _c_strides(shape, dtype.itemsize)
        self._init(memptr, memptr.ptr, shape, tuple(int(s) for s in strides), dtype,
                   memptr.device_id, None)

    def _init(self, memptr: Any, ptr: int, shape: tuple[int, ...], strides: tuple[int, ...],
              dtype: np.dtype, device: int, base: ndarray | None) -> None:
        self._memptr = memptr
        self._ptr = int(ptr)
        self._shape = shape
        self._strides = strides
        self._dtype = dtype
        self._device = int(device)
        self._base = base

    @classmethod
    def _wrap(cls, memptr: Any, ptr: int, shape: tuple[int, ...], strides: tuple[int, ...],
              dtype: np.dtype, device: int, base: ndarray | None) -> ndarray:
        a = cls.__new__(cls)
        a._init(memptr, ptr, shape, strides, dtype, device, base)
        return a

    # ------------------------------------------------------------ memory

    def _meta(self) -> np.ndarray:
        """A numpy array with this shape, strides and dtype over no memory (metadata only)."""
        return np.lib.stride_tricks.as_strided(np.zeros(1, self._dtype), self._shape,
                                               self._strides, writeable=False) \
            if self.size else np.empty(self._shape, self._dtype)

    def _extent(self) -> tuple[int, int]:
        """Lowest and one-past-highest address the array touches."""
        if self.size == 0:
            return self._ptr, self._ptr
        lo = hi = self._ptr
        for n, s in zip(self._shape, self._strides, strict=True):
            if s > 0:
                hi += (n - 1) * s
            else:
                lo += (n - 1) * s
        return lo, hi + self._dtype.itemsize

    def _host_view(self, what: str = "device work") -> np.ndarray:
        """The array's memory as numpy, for queued work (the device "executing")."""
        if self.size == 0:
            return np.empty(self._shape, self._dtype)
        lo, hi = self._extent()
        raw = _mem.view(lo, hi - lo, what, device=self._device)
        return np.ndarray(self._shape, self._dtype, buffer=raw, offset=self._ptr - lo,
                          strides=self._strides)

    def _snapshot(self) -> _Snap:
        """What queued work needs of the array, without holding the array (so its memory can
        go back to the pool while the work is queued, as in CuPy)."""
        lo, hi = self._extent()
        mem = self._memptr.mem if self._memptr is not None else None
        return _Snap(getattr(mem, "_alloc", None), lo, hi - lo, self._ptr, self._shape,
                     self._strides, self._dtype, self._device)

    def _from_view(self, v: np.ndarray) -> ndarray:
        """A device array for a numpy view ``v`` of :meth:`_host_view` (no data read)."""
        ptr = v.__array_interface__["data"][0] if v.size else self._ptr
        return ndarray._wrap(self._memptr, ptr, tuple(v.shape), tuple(v.strides), v.dtype,
                             self._device, self._base if self._base is not None else self)

    def _view_op(self, fn: Callable[[np.ndarray], np.ndarray], what: Any = "") -> ndarray:
        base = self._host_view("view")
        v = fn(base)
        if v.size and not np.may_share_memory(v, base):
            raise AssertionError(f"emulated cupy: a view operation copied ({what!r})")
        return self._from_view(v)

    # ------------------------------------------------------------ attributes

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @shape.setter
    def shape(self, value: Any) -> None:
        r = self.reshape(value)
        if r._ptr != self._ptr or r._memptr is not self._memptr:
            raise AttributeError("incompatible shape")
        self._shape, self._strides = r._shape, r._strides

    @property
    def strides(self) -> tuple[int, ...]:
        return self._strides

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64))

    @property
    def itemsize(self) -> int:
        return self._dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    @property
    def data(self) -> Any:
        from cupy.cuda.memory import MemoryPointer

        if self._memptr is None:
            return None
        return MemoryPointer(self._memptr.mem, self._ptr - self._memptr.mem.ptr)

    @property
    def device(self) -> Any:
        from cupy.cuda.device import Device

        return Device(self._device)

    @property
    def base(self) -> ndarray | None:
        return self._base

    @property
    def flags(self) -> _Flags:
        return _Flags(self)

    @property
    def T(self) -> ndarray:
        return self.transpose()

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        c = self.flags.c_contiguous
        stream = _streams.current_stream(self._device)
        return {
            "shape": self._shape, "typestr": self._dtype.str, "descr": self._dtype.descr,
            "data": (self._ptr if self.size else 0, False), "version": 3,
            "strides": None if c else self._strides,
            # CAI v3: 1 means the legacy default stream.
            "stream": 1 if stream == _streams.LEGACY else stream,
        }

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2, self._device)  # kDLCUDA

    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                   copy: Any = None) -> Any:
        raise BufferError("emulated cupy: DLPack export of device memory is not emulated; "
                          "use __cuda_array_interface__")

    def __array__(self, dtype: Any = None) -> np.ndarray:
        raise TypeError(_NO_IMPLICIT)

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        import cupy

        f = getattr(cupy, ufunc.__name__, None)
        if f is None or method != "__call__":
            return NotImplemented
        return f(*inputs, **kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        import cupy

        f = getattr(cupy, func.__name__, None)
        if f is None or not callable(f):
            return NotImplemented
        return f(*args, **kwargs)

    def __repr__(self) -> str:
        return f"array({np.array2string(self.get(), separator=', ')}, dtype={self.dtype})" \
            if self.size < 1000 else f"<emulated cupy.ndarray {self.shape} {self.dtype}>"

    def __str__(self) -> str:
        return str(self.get())

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of unsized object")
        return self._shape[0]

    def __iter__(self) -> Any:
        if not self._shape:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._shape[0]))

    # ------------------------------------------------------------ to the host

    def get(self, stream: Any = None, order: str = "C", out: np.ndarray | None = None,
            blocking: bool = True) -> np.ndarray:
        """Copy to the host on ``stream`` (default: current); blocking waits for it."""
        handle = _streams.current_stream(self._device) if stream is None else stream.ptr
        if out is None:
            out = np.empty(self._shape, self._dtype, order="F" if order == "F" else "C")
        elif not isinstance(out, np.ndarray):
            raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
        elif out.shape != self._shape or out.dtype != self._dtype:
            raise ValueError(f"Shape mismatch. Expected shape: {self._shape}, actual shape: "
                             f"{out.shape}")
        if self.size == 0:
            return out
        pinned = _mem.find(out.__array_interface__["data"][0])
        src = self._snapshot()

        def copy() -> None:
            out[...] = src.view("cudaMemcpyAsync (device to host)")

        if blocking or pinned is None:
            _streams.check_alive(self._device)
            _streams.run_now(handle, self._device, copy, "cudaMemcpyAsync (device to host)")
        else:
            _streams.enqueue(handle, self._device, copy, "cudaMemcpyAsync (device to host)",
                             keep=(src.alloc, pinned, out))
        return out

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        """Copy host array ``arr`` into this array on ``stream``."""
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self._shape:
            raise ValueError(f"Shape mismatch. Old shape: {self._shape}, new shape: {arr.shape}")
        if arr.dtype != self._dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self._dtype} array")
        handle = _streams.current_stream(self._device) if stream is None else stream.ptr
        _h2d(self, arr, handle)

    def tolist(self) -> Any:
        return self.get().tolist()

    def item(self) -> Any:
        return self.get().item()

    def tobytes(self, order: str = "C") -> bytes:
        return self.get().tobytes(order)

    def _scalar(self) -> np.ndarray:
        if self.size != 1:
            raise TypeError("only size-1 arrays can be converted to Python scalars")
        return self.get()

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError("The truth value of an array with more than one element is "
                             "ambiguous. Use a.any() or a.all()")
        return bool(self.get())

    def __int__(self) -> int:
        return int(self._scalar().reshape(()))

    def __float__(self) -> float:
        return float(self._scalar().reshape(()))

    def __complex__(self) -> complex:
        return complex(self._scalar().reshape(()))

    def __index__(self) -> int:
        if self._dtype.kind not in "iu" or self.ndim:
            raise TypeError("only integer scalar arrays can be converted to a scalar index")
        return int(self.get())

    # ------------------------------------------------------------ views

    def view(self, dtype: Any = None, type: Any = None) -> ndarray:
        if dtype is None:
            return self._view_op(lambda v: v.view())
        return self._view_op(lambda v: v.view(np.dtype(dtype)))

    def reshape(self, *shape: Any, order: str = "C", copy: Any = None) -> ndarray:
        if len(shape) == 1 and not isinstance(shape[0], int | np.integer):
            shape = tuple(shape[0])
        v = self._host_view("reshape")
        try:
            if copy:
                raise ValueError
            r = np.reshape(v, shape, order=order, copy=False)
        except ValueError:
            if copy is False:
                raise ValueError("Unable to avoid copy while reshaping.") from None
            return _apply(lambda x: np.reshape(x, shape, order=order), (self,), what="reshape")
        return self._from_view(r)

    def ravel(self, order: str = "C") -> ndarray:
        return self.reshape(-1, order=order)

    def flatten(self, order: str = "C") -> ndarray:
        return self.reshape(-1, order=order).copy()

    def transpose(self, *axes: Any) -> ndarray:
        if len(axes) == 1 and (axes[0] is None or not isinstance(axes[0], int | np.integer)):
            axes = axes[0]
        return self._view_op(lambda v: v.transpose(axes) if axes else v.transpose())

    def swapaxes(self, axis1: int, axis2: int) -> ndarray:
        return self._view_op(lambda v: v.swapaxes(axis1, axis2))

    def squeeze(self, axis: Any = None) -> ndarray:
        return self._view_op(lambda v: v.squeeze(axis))

    def diagonal(self, offset: int = 0, axis1: int = 0, axis2: int = 1) -> ndarray:
        return self._view_op(lambda v: v.diagonal(offset, axis1, axis2))

    @property
    def real(self) -> ndarray:
        return self._view_op(lambda v: v.real) if self._dtype.kind == "c" else self

    @property
    def imag(self) -> ndarray:
        return self._view_op(lambda v: v.imag) if self._dtype.kind == "c" else _apply(
            lambda v: np.zeros_like(v), (self,), what="imag")

    # ------------------------------------------------------------ indexing

    def __getitem__(self, key: Any) -> ndarray:
        key = _index_key(key, self)
        if not _is_advanced(key):
            # A trailing Ellipsis keeps numpy from returning a scalar: CuPy returns a 0-d view.
            k = key if any(x is Ellipsis for x in key) else (*key, Ellipsis)
            return self._view_op(lambda v: v[k], key)
        pattern = _pattern(key)
        return _apply(lambda v, *k: v[_rebuild(pattern, k)], (self, *_key_arrays(key)),
                      what="fancy indexing (take)")

    def __setitem__(self, key: Any, value: Any) -> None:
        key = _index_key(key, self)
        _check_operand_device(self)
        if isinstance(value, np.ndarray):
            value = _staged(value)  # pageable host memory: copied to the device now
        if isinstance(value, ndarray):
            _check_operand_device(value)
        arrays = _key_arrays(key)
        n = len(arrays)
        pattern = _pattern(key)
        operand = isinstance(value, ndarray)
        scalar = None if operand else value

        def work(dst: np.ndarray, *rest: Any) -> None:
            k = _rebuild(pattern, rest[:n])
            dst[k] = rest[n] if operand else scalar

        _queue(work, (self, *arrays, *((value,) if operand else ())), "setitem (scatter)",
               write=self)

    # ------------------------------------------------------------ computing

    def copy(self, order: str = "C") -> ndarray:
        return _apply(lambda v: np.array(v, order=order, copy=True), (self,), what="copy")

    def astype(self, dtype: Any, order: str = "K", casting: Any = None, subok: Any = None,
               copy: bool = True) -> ndarray:
        dtype = np.dtype(dtype)
        if not copy and dtype == self._dtype:
            return self
        return _apply(lambda v: v.astype(dtype, order=order), (self,), what="astype")

    def fill(self, value: Any) -> None:
        _queue(lambda v: v.fill(value), (self,), "fill", write=self)

    def __copy__(self) -> ndarray:
        return self.copy()

    def __deepcopy__(self, memo: Any) -> ndarray:
        return self.copy()

    def __reduce__(self) -> Any:
        import cupy

        return (cupy.asarray, (self.get(),))


_METHOD_PARAMS = {
    **dict.fromkeys(("sum", "mean"), "axis=None, dtype=None, out=None, keepdims=False"),
    "prod": "axis=None, dtype=None, out=None, keepdims=None",
    **dict.fromkeys(("all", "any", "max", "min", "ptp"), "axis=None, out=None, keepdims=False"),
    **dict.fromkeys(("argmax", "argmin"), "axis=None, out=None, dtype=None, keepdims=False"),
    **dict.fromkeys(("cumsum", "cumprod"), "axis=None, dtype=None, out=None"),
    **dict.fromkeys(("std", "var"), "axis=None, dtype=None, out=None, ddof=0, keepdims=False"),
    "clip": "min=None, max=None, out=None",
    "conj": "",
    "repeat": "repeats, axis=None",
    "round": "decimals=0, out=None",
    "searchsorted": "v, side='left', sorter=None",
    "take": "indices, axis=None, out=None",
}


def _method(np_name: str) -> Callable[..., Any]:
    """``numpy.<np_name>`` as a queued method, with CuPy's parameters (bound by name)."""
    import inspect

    scope: dict[str, Any] = {}
    exec(f"def f(self, {_METHOD_PARAMS[np_name]}): pass", scope)
    sig = inspect.signature(scope["f"])

    def method(self: ndarray, *args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(self, *args, **kwargs)
        given = {k: v for k, v in bound.arguments.items() if k != "self"}
        out = given.pop("out", None)
        if np_name == "clip":
            given = {"a_min": given.get("min"), "a_max": given.get("max")}
        if given.get("keepdims") is None:
            given.pop("keepdims", None)
        f = getattr(np, np_name)
        operands = {k: v for k, v in given.items() if isinstance(v, ndarray)}
        rest = {k: v for k, v in given.items() if k not in operands}
        names = list(operands)
        res = _apply(lambda x, *o: f(x, **rest, **dict(zip(names, o, strict=True))),
                     (self, *operands.values()), what=np_name)
        if out is not None:
            import cupy

            cupy.copyto(out, res)
            return out
        return res

    method.__signature__ = sig  # type: ignore[attr-defined]
    method.__name__ = np_name
    return method


for _name in ("sum", "prod", "max", "min", "mean", "any", "all", "argmax", "argmin", "cumsum",
              "cumprod", "std", "var", "clip", "round", "repeat", "take", "searchsorted",
              "conj", "ptp"):
    setattr(ndarray, _name, _method(_name))
ndarray.conjugate = ndarray.conj  # type: ignore[attr-defined]


def _binary(op: Callable[[Any, Any], Any], name: str, reflected: bool = False
            ) -> Callable[[ndarray, Any], Any]:
    def method(self: ndarray, other: Any) -> Any:
        if isinstance(other, np.ndarray) and other.ndim:
            raise TypeError(f"Unsupported type {type(other)}")
        if not isinstance(other, ndarray | int | float | complex | bool | np.generic):
            return NotImplemented
        args = (other, self) if reflected else (self, other)
        return _apply(op, args, what=name)

    method.__name__ = name
    return method


def _inplace(op: Callable[[Any, Any], Any], name: str) -> Callable[[ndarray, Any], ndarray]:
    def method(self: ndarray, other: Any) -> ndarray:
        if isinstance(other, np.ndarray) and other.ndim:
            raise TypeError(f"Unsupported type {type(other)}")
        _check_operand_device(self)
        if isinstance(other, ndarray):
            _check_operand_device(other)
            _queue(lambda v, o: op(v, o), (self, other), name, write=self)
        else:
            _queue(lambda v: op(v, other), (self,), name, write=self)
        return self

    method.__name__ = name
    return method


for _op, _n in ((operator.add, "add"), (operator.sub, "sub"), (operator.mul, "mul"),
                (operator.truediv, "truediv"), (operator.floordiv, "floordiv"),
                (operator.mod, "mod"), (operator.pow, "pow"), (operator.and_, "and"),
                (operator.or_, "or"), (operator.xor, "xor"), (operator.lshift, "lshift"),
                (operator.rshift, "rshift"), (operator.matmul, "matmul")):
    setattr(ndarray, f"__{_n}__", _binary(_op, _n))
    setattr(ndarray, f"__r{_n}__", _binary(_op, _n, reflected=True))
    _iop = getattr(operator, f"i{_n}")
    setattr(ndarray, f"__i{_n}__", _inplace(_iop, f"i{_n}"))
for _op, _n in ((operator.eq, "eq"), (operator.ne, "ne"), (operator.lt, "lt"),
                (operator.le, "le"), (operator.gt, "gt"), (operator.ge, "ge")):
    setattr(ndarray, f"__{_n}__", _binary(_op, _n))
ndarray.__hash__ = None  # type: ignore[assignment]
for _op, _n in ((operator.neg, "neg"), (operator.pos, "pos"), (operator.invert, "invert"),
                (operator.abs, "abs")):
    setattr(ndarray, f"__{_n}__", (lambda f, n: lambda self: _apply(f, (self,), what=n))(_op, _n))


# ---------------------------------------------------------------- the queue


def _check_operand_device(a: ndarray) -> None:
    cur = _streams.current_device()
    if a._device != cur:
        raise ValueError(f"Array device must be same as the current device: array device = "
                         f"{a._device} while current = {cur}")


def _staged(a: np.ndarray) -> ndarray:
    """A device copy of host array ``a`` (pageable memory is read now, pinned when the copy
    runs, as cudaMemcpyAsync does)."""
    out = ndarray(a.shape, a.dtype)
    _h2d(out, a, _streams.current_stream(out._device))
    return out


def _h2d(dst: ndarray, src: np.ndarray, handle: int) -> None:
    _streams.check_alive(dst._device)
    if src.size == 0:
        return
    pinned = _mem.find(src.__array_interface__["data"][0]) if src.flags.c_contiguous or \
        src.flags.f_contiguous else None
    host = src if pinned is not None else src.copy()
    snap = dst._snapshot()

    def copy() -> None:
        snap.view("cudaMemcpyAsync (host to device)")[...] = host

    _streams.enqueue(handle, dst._device, copy, "cudaMemcpyAsync (host to device)",
                     keep=(snap.alloc, pinned, host))


def _queue(fn: Callable[..., None], arrays: Sequence[Any], what: str,
           write: ndarray | None = None) -> None:
    """Queue ``fn(*host views of arrays)`` on the current stream of the current device
    (``write``: the array the work writes, named for readers; every array is checked alike)."""
    device = _streams.current_device()
    for a in arrays:
        if isinstance(a, ndarray) and a._device != device:
            raise ValueError(f"Array device must be same as the current device: array device = "
                             f"{a._device} while current = {device}")
    handle = _streams.current_stream(device)
    items = [a._snapshot() if isinstance(a, ndarray) else a for a in arrays]

    def work() -> None:
        fn(*[a.view(what) if isinstance(a, _Snap) else a for a in items])

    _streams.enqueue(handle, device, work, what,
                     keep=tuple(a.alloc for a in items if isinstance(a, _Snap)))


def _dummy(a: Any) -> Any:
    """What shape/dtype inference sees for a device array: zeros of its shape, no memory."""
    if isinstance(a, ndarray):
        return np.broadcast_to(np.zeros((), a._dtype), a._shape)
    if isinstance(a, list | tuple) and any(isinstance(x, ndarray) for x in a):
        return type(a)(_dummy(x) for x in a)
    return a


def _apply(fn: Callable[..., Any], args: Sequence[Any], *, what: str) -> Any:
    """Queue ``fn(*args)`` with device arrays as their memory; return device results.

    The result's shapes and dtypes come from running ``fn`` on zero-filled stand-ins of the
    inputs now; the values are computed when the work runs.
    """
    for a in _flatten(args):
        if isinstance(a, np.ndarray) and a.ndim:
            raise TypeError(f"Unsupported type {type(a)}: a host array where a device "
                            f"array is required ({what})")
        if isinstance(a, ndarray):
            _check_operand_device(a)
    with np.errstate(all="ignore"):
        probe = fn(*[_dummy(a) for a in args])
    single = not isinstance(probe, tuple)
    probes = (probe,) if single else probe
    outs = []
    for p in probes:
        p = np.asarray(p)
        outs.append(ndarray(p.shape, p.dtype))
    flat = _flatten(args)
    n_in = len(flat)
    layout = _layout(args)  # no reference to the arrays: their blocks may go back to the pool

    def work(*views: Any) -> None:
        res = fn(*_split(layout, views[:n_in]))
        for o, r in zip(views[n_in:], (res,) if single else res, strict=True):
            o[...] = r

    _queue(_take_guard(work), [*flat, *outs], what)
    return outs[0] if single else tuple(outs)


def _flatten(args: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for a in args:
        if isinstance(a, list | tuple) and any(isinstance(x, ndarray) for x in a):
            out.extend(a)
        else:
            out.append(a)
    return out


def _layout(args: Sequence[Any]) -> list[tuple[type, int] | None]:
    """Which arguments are sequences of device arrays (their type and length)."""
    return [(type(a), len(a)) if isinstance(a, list | tuple)
            and any(isinstance(x, ndarray) for x in a) else None for a in args]


def _split(layout: Sequence[tuple[type, int] | None], views: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    i = 0
    for seq in layout:
        if seq is not None:
            out.append(seq[0](views[i: i + seq[1]]))
            i += seq[1]
        else:
            out.append(views[i])
            i += 1
    return out


# ---------------------------------------------------------------- index keys


def _index_key(key: Any, a: ndarray) -> Any:
    """Host index arrays (numpy, lists) become device arrays, as CuPy copies them."""
    if not isinstance(key, tuple):
        key = (key,)
    out = []
    for k in key:
        if isinstance(k, np.ndarray) and k.ndim == 0 and k.dtype.kind in "iu":
            k = int(k)  # a 0-d integer array indexes like an integer
        if isinstance(k, np.ndarray) and k.ndim:
            k = _staged(k)
        elif isinstance(k, list):
            k = _staged(np.asarray(k))
        if isinstance(k, ndarray) and k.dtype == np.bool_:
            # The result's size depends on the mask: CuPy synchronizes to count it.
            k = _staged(np.flatnonzero(k.get().reshape(-1)).reshape(-1)) if k.ndim == 1 else \
                tuple(_staged(x) for x in np.nonzero(k.get()))
            if isinstance(k, tuple):
                out.extend(k)
                continue
        out.append(k)
    return tuple(out)


def _is_advanced(key: tuple[Any, ...]) -> bool:
    return any(isinstance(k, ndarray) for k in key)


def _key_arrays(key: tuple[Any, ...]) -> list[ndarray]:
    return [k for k in key if isinstance(k, ndarray)]


_SLOT = object()


def _pattern(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """``key`` with its device arrays replaced by a placeholder (queued work must not hold
    them)."""
    return tuple(_SLOT if isinstance(k, ndarray) else k for k in key)


def _rebuild(pattern: tuple[Any, ...], views: Sequence[np.ndarray]) -> tuple[Any, ...]:
    it = iter(views)
    return tuple(next(it) if k is _SLOT else k for k in pattern)


def _take_guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*a: Any) -> Any:
        try:
            return fn(*a)
        except IndexError as e:
            raise Fault(f"index out of bounds in a device kernel: {e}") from None

    return wrapped


