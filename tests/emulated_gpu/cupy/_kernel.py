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
    d = tuple(int(x) for x in d)
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

    def __call__(self, grid: Any, block: Any, args: Sequence[Any], *, shared_mem: int = 0,
                 enable_cooperative_groups: bool = False) -> None:
        from _emucuda.kernels import Pointer
        from cupy._core import ndarray

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
        fn = self._fn
        _streams.enqueue(_streams.current_stream(device), device,
                         lambda: fn.launch(grid3, block3, packed, int(shared_mem)),
                         f"kernel {self.name}", keep=keep)


class RawKernel(_Function):
    """A kernel from CUDA C++ source (compiled for the host at first use)."""

    def __init__(self, code: str, name: str, options: tuple[str, ...] = (),
                 backend: str = "nvrtc", translate_cucomplex: bool = False, *,
                 enable_cooperative_groups: bool = False, jitify: bool = False) -> None:
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

    def __call__(self, grid: Any, block: Any, args: Sequence[Any], *, shared_mem: int = 0,
                 enable_cooperative_groups: bool = False) -> None:
        self._function()
        super().__call__(grid, block, args, shared_mem=shared_mem)

    def compile(self, log_stream: Any = None) -> None:
        self._function()

    @property
    def attributes(self) -> dict[str, int]:
        return {"max_threads_per_block": 1024, "shared_size_bytes": 0}

    @property
    def max_threads_per_block(self) -> int:
        return 1024


class RawModule:
    """A module of kernels from CUDA C++ source (``code=``); ``path=`` (cubin/ptx) is not
    emulated."""

    def __init__(self, code: str | None = None, *, path: str | None = None,
                 options: tuple[str, ...] = (), backend: str = "nvrtc",
                 translate_cucomplex: bool = False, enable_cooperative_groups: bool = False,
                 name_expressions: Sequence[str] | None = None, jitify: bool = False) -> None:
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
