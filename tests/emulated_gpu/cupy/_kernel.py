"""``cupy.RawKernel`` / ``cupy.RawModule``: CUDA C++ compiled for the host (``_emucuda.kernels``),
launched as queued work on the current stream, every thread of the grid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from _emucuda import memory as _mem
from _emucuda import streams as _streams

__all__ = ["RawKernel", "RawModule"]


def _dims(d: Any, what: str) -> tuple[int, int, int]:
    if isinstance(d, int | np.integer):
        d = (int(d),)
    # CuPy turns a 0 into 1 before the driver sees it (cupy/cuda/function.pyx).
    d = tuple(max(1, int(x)) for x in d)
    if not 1 <= len(d) <= 3:
        raise ValueError(f"{what} must be a tuple of 1 to 3 ints, got {d}")
    return (*d, 1, 1)[:3]  # type: ignore[return-value]


def _arg(a: Any, i: int) -> Any:
    """A kernel argument as the host runner takes it (CuPy's conversions)."""
    from _emucuda.kernels import Pointer

    from cupy._core import ndarray

    if isinstance(a, ndarray):
        return Pointer(a._ptr if a.size else 0)
    if isinstance(a, np.ndarray):
        raise TypeError(f"Unsupported type {type(a)} (argument {i}: a host array where a "
                        f"device array is required)")
    if isinstance(a, np.generic):
        return a
    if isinstance(a, bool):
        return np.bool_(a)
    if isinstance(a, int):
        return np.int64(a)  # CuPy passes a Python int as a 64-bit integer
    if isinstance(a, float):
        return np.float64(a)
    if isinstance(a, complex):
        return np.complex128(a)
    if hasattr(a, "__cuda_array_interface__"):
        return Pointer(int(a.__cuda_array_interface__["data"][0]))
    raise TypeError(f"Unsupported type {type(a)} (argument {i})")


class _Function:
    def __init__(self, fn: Any, name: str) -> None:
        self._fn = fn
        self.name = name

    def __call__(self, grid: Any, block: Any, args: Sequence[Any], **kwargs: Any) -> None:
        from _emucuda.kernels import Pointer

        from cupy._core import ndarray

        shared_mem = int(kwargs.pop("shared_mem", 0))
        kwargs.pop("enable_cooperative_groups", None)
        if kwargs:
            raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")
        grid3, block3 = _dims(grid, "grid"), _dims(block, "block")
        if not isinstance(args, tuple | list):
            raise TypeError(f"args must be a tuple, got {type(args).__name__}")
        device = _streams.current_device()
        _streams.check_alive(device)
        for a in args:
            if isinstance(a, ndarray) and a._device != device:
                raise ValueError(f"Array device must be same as the current device: array "
                                 f"device = {a._device} while current = {device}")
        packed = [_arg(a, i) for i, a in enumerate(args)]
        # The allocations, not the arrays: CuPy holds no reference to a kernel's arguments,
        # so a dropped array's block can go back to the pool while the kernel is queued.
        keep = tuple(_mem.find(p.address) for p in packed if isinstance(p, Pointer)
                     and p.address)
        # Configuration and arguments are checked at the call, as CuPy and the driver do; the
        # kernel runs when the stream's turn comes, where an illegal address is found.
        launch = self._fn.prepare(grid3, block3, packed, shared_mem, device=device)
        _streams.enqueue(_streams.current_stream(device), device, launch.run,
                         f"kernel {self.name}", keep=keep)


class RawKernel(_Function):
    """A kernel from CUDA C++ source (compiled for the host at first use)."""

    def __init__(self, code: str, name: str, options: tuple[str, ...] = (),
                 backend: str = "nvrtc", translate_cucomplex: bool = False, *,
                 enable_cooperative_groups: bool = False, jitify: Any = None) -> None:
        self.code = code
        self.name = name
        self.options = tuple(options)
        self.backend = backend
        self._fn = None

    def _function(self) -> Any:
        if self._fn is None:
            from _emucuda.kernels import compile_module

            self._fn = compile_module(self.code, self.options).get_function(self.name)
        return self._fn

    def __call__(self, grid: Any, block: Any, args: Sequence[Any], **kwargs: Any) -> None:
        self._function()
        super().__call__(grid, block, args, **kwargs)

    def compile(self, log_stream: Any = None) -> None:
        self._function()

    @property
    def attributes(self) -> dict[str, int]:
        return dict(self._function().attributes)

    @property
    def max_threads_per_block(self) -> int:
        return int(self._function().max_threads_per_block)


class RawModule:
    """A module of kernels from CUDA C++ source (``code=``); ``path=`` (cubin/ptx) is not
    emulated."""

    def __init__(self, code: str | None = None, *, path: str | None = None,
                 options: tuple[str, ...] = (), backend: str = "nvrtc",
                 translate_cucomplex: bool = False, enable_cooperative_groups: bool = False,
                 name_expressions: Sequence[str] | None = None, jitify: Any = None) -> None:
        if path is not None:
            raise NotImplementedError("emulated cupy: RawModule(path=...) loads a cubin or PTX "
                                      "file, which the host cannot run; pass code=")
        if code is None:
            raise TypeError("One of code and path must be given")
        self.code = code
        self.options = tuple(options)
        self._names = tuple(name_expressions or ())
        self._module: Any = None

    def _mod(self) -> Any:
        if self._module is None:
            from _emucuda.kernels import compile_module

            self._module = compile_module(self.code, self.options, self._names or None)
        return self._module

    def get_function(self, name: str) -> _Function:
        return _Function(self._mod().get_function(name), name)

    def compile(self, log_stream: Any = None) -> None:
        self._mod()
