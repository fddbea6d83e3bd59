"""Shared internals of the emulated kvikio: errors shaped like libkvikio's, C integer
conversions shaped like Cython's, the emulated device's GDS switch and the I/O record.

Error messages copy libkvikio 26.10's: ``KvikIO failure at: <file>:<line>: <msg>`` for
``KVIKIO_FAIL``/``KVIKIO_EXPECT``, ``<msg> Linux system/library function call error at:
<file>:<line>: <strerror>`` for ``KVIKIO_SYSCALL_CHECK``. C++ exception types map to Python ones
as Cython's ``except +`` maps them: ``std::invalid_argument`` -> ValueError,
``std::overflow_error`` -> OverflowError, ``std::out_of_range`` -> IndexError, every other
``std::exception`` (``CUfileException``, ``std::system_error``, ``std::runtime_error``) ->
RuntimeError. Line numbers were read from the 26.10 wheel where it could be made to raise
without a GPU (defaults, file_utils, env, libcurl); the others are those of kvikio's git main and
may be off by a few lines.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

from _emucuda import errors, streams

__all__ = [
    "CUDADriverError", "DeviceFault", "IORecord", "as_c_int", "check_annotated", "clear_records",
    "cufile_fail", "gds_available", "kvikio_fail", "record", "records", "set_gds",
    "system_error",
]

#: Where libkvikio 26.10's wheel was built (the prefix of the file names in its messages).
SRC = "/__w/kvikio/kvikio/cpp"
#: The emulated device has a working GDS stack (cuFile driver, nvidia-fs) when this is "1".
GDS_ENV = "EMULATED_GPU_GDS"
#: The page size cuFile and O_DIRECT align to.
PAGE = os.sysconf("SC_PAGESIZE") if hasattr(os, "sysconf") else 4096

_gds_override: bool | None = None


def gds_available() -> bool:
    """Whether the emulated machine has GDS (env ``EMULATED_GPU_GDS=1``, or :func:`set_gds`)."""
    if _gds_override is not None:
        return _gds_override
    return os.environ.get(GDS_ENV, "0").strip() == "1"


def set_gds(value: bool | None) -> None:
    """Tests: force GDS on (True) or off (False); None: follow ``EMULATED_GPU_GDS`` again."""
    global _gds_override
    _gds_override = value


def kvikio_fail(file: str, line: int, msg: str, exc: type[Exception] = RuntimeError) -> Exception:
    """The exception ``KVIKIO_FAIL(msg, exc)`` raises at ``file:line`` (relative to cpp/)."""
    return exc(f"KvikIO failure at: {SRC}/{file}:{line}: {msg or '(no message)'}")


def cufile_fail(file: str, line: int, msg: str) -> RuntimeError:
    """``KVIKIO_CUFILE_TRY`` / ``KVIKIO_CUFILE_CHECK_BYTES_DONE`` failing at ``file:line``."""
    return RuntimeError(f"cuFile error at: {SRC}/{file}:{line}: {msg}")


def system_error(msg: str, file: str, line: int, errno: int) -> RuntimeError:
    """``KVIKIO_SYSCALL_CHECK`` failing (a ``GenericSystemError``, a ``std::system_error``)."""
    return RuntimeError(f"{msg} Linux system/library function call error at: {SRC}/{file}:{line}: "
                        f"{os.strerror(errno)}")


class DeviceFault(errors.Fault, RuntimeError):
    """An access outside the allocations of the emulated device by a kvikio call.

    An ``errors.Fault`` naming the call (the emulator's out-of-bounds report) and a RuntimeError,
    which is what every libkvikio failure is in Python, so that code written for the real
    library handles it as it would handle the hardware's report (a ``CUDA_ERROR_*`` or
    ``cuFile error`` RuntimeError from the copy or the DMA).
    """


class CUDADriverError(errors.CUDARuntimeError):
    """A CUDA driver error as libkvikio reports it (``KVIKIO_CUDA_DRIVER_TRY``): a RuntimeError
    ``CUDA error at: <file>:<line>: CUDA_ERROR_<NAME>(<text>)``; ``status`` as CuPy's."""

    _NAMES: ClassVar[dict[int, tuple[str, str]]] = {
        700: ("CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"),
        1: ("CUDA_ERROR_INVALID_VALUE", "invalid argument")}

    def __init__(self, status: int, detail: str = "", where: str = "src/utils.cpp:73") -> None:
        self.status = int(status)
        name, text = self._NAMES.get(self.status, (f"CUDA_ERROR_{status}", "unknown error"))
        msg = f"CUDA error at: {SRC}/{where}: {name}({text})"
        if detail:
            msg += f" [emulated device: {detail}]"
        RuntimeError.__init__(self, msg)


def check_alive(device: int) -> None:
    """The device's context is usable; else the sticky error as kvikio reports CUDA's."""
    try:
        streams.check_alive(device)
    except errors.CUDARuntimeError as e:
        raise CUDADriverError(e.status, str(e)) from None


def synchronize_legacy(device: int) -> None:
    """``cuStreamSynchronize(nullptr)`` on ``device`` (GDS reads do it before the DMA)."""
    check_alive(device)
    try:
        streams.synchronize(streams.LEGACY, device)
    except errors.CUDARuntimeError as e:
        raise CUDADriverError(e.status, str(e), "src/file_handle.cpp:287") from None


# ---------------------------------------------------------------- Cython-shaped conversions

_C_RANGES = {
    "size_t": (0, (1 << 64) - 1), "unsigned int": (0, (1 << 32) - 1), "uint8_t": (0, 255),
    "long": (-(1 << 63), (1 << 63) - 1), "int": (-(1 << 31), (1 << 31) - 1),
}


def as_c_int(value: Any, ctype: str = "size_t") -> int:
    """``value`` converted to the C integer type ``ctype`` as Cython converts it.

    Raises
    ------
    TypeError
        Not a number ("an integer is required").
    OverflowError
        Negative for an unsigned type, or too large.
    """
    if isinstance(value, int):
        v = int(value)
    elif isinstance(value, float) or (hasattr(value, "__int__") and not isinstance(value, str)):
        v = int(value)  # Cython falls back on __int__ (floats truncate)
    elif hasattr(value, "__index__"):
        v = value.__index__()
    else:
        raise TypeError("an integer is required")
    lo, hi = _C_RANGES[ctype]
    if v < lo:
        if lo == 0:
            raise OverflowError(f"can't convert negative value to {ctype}")
        raise OverflowError(f"value too small to convert to {ctype}")
    if v > hi:
        raise OverflowError(f"value too large to convert to {ctype}")
    return v


def check_annotated(value: Any, name: str, *, optional: bool = False,
                    expected: type = int) -> None:
    """The type check Cython makes of an argument annotated ``int`` / ``Optional[int]`` / ``str``.

    Raises
    ------
    TypeError
        ``Argument '<name>' has incorrect type (expected int, got <type>)``.
    """
    if value is None and optional:
        return
    ok = isinstance(value, str) if expected is str else (
        isinstance(value, (int, float)) and not isinstance(value, str))
    if not ok:
        raise TypeError(f"Argument '{name}' has incorrect type (expected {expected.__name__}, "
                        f"got {type(value).__name__})")


# ---------------------------------------------------------------- what the emulated I/O did


@dataclass(frozen=True)
class IORecord:
    """One task of an emulated kvikio I/O, as it ran (at ``IOFuture.get()`` for async ones).

    ``route`` says how the bytes moved on the emulated machine:

    * ``"host"``: POSIX ``pread``/``pwrite`` straight into/out of host memory;
    * ``"bounce"``: POSIX I/O through kvikio's pinned host bounce buffer and a copy to/from the
      device (compat mode, reads below ``gds_threshold``, handles whose O_DIRECT open failed);
    * ``"dma"``: cuFile DMA of whole pages (4 KiB) at a page-aligned file offset and device
      address;
    * ``"dma_unaligned"``: cuFile with an unaligned file offset or device address, or the
      partial page at the end of an aligned transfer: cuFile moves it through its own GPU
      bounce buffers (correct, slower);
    * ``"http"``: a remote range request into host or device memory.
    """

    call: str
    target: str
    file_offset: int
    size: int
    ptr: int
    route: str


_records: deque[IORecord] = deque(maxlen=1 << 16)
_records_lock = threading.Lock()


def record(call: str, target: str, file_offset: int, size: int, ptr: int, route: str) -> None:
    with _records_lock:
        _records.append(IORecord(call, target, file_offset, size, ptr, route))


def records() -> list[IORecord]:
    """The I/O tasks run so far (the last 65536), oldest first."""
    with _records_lock:
        return list(_records)


def clear_records() -> None:
    with _records_lock:
        _records.clear()
