"""``kvikio._lib.buffer``: cuFile buffer registration on the emulated device.

Registration only speeds up GDS; the emulator checks the buffer (it must be a live device
allocation, as ``cuMemGetAddressRange`` needs) and otherwise does nothing.
"""

from __future__ import annotations

from typing import Any

from _emucuda import errors, memory

from ._common import CUDADriverError, check_alive
from .arr import asarray

__all__ = ["bounce_buffer_free", "memory_deregister", "memory_register"]


def _check(buf: Any) -> None:
    arr = asarray(buf)
    a = memory.find(arr.ptr)
    if a is None or a.device < 0:
        # cuMemGetAddressRange on memory that is not a device allocation
        raise CUDADriverError(1, f"{arr.ptr:#x} is not device memory", "src/utils.cpp:185")
    try:
        check_alive(a.device)
    except errors.CUDARuntimeError:
        raise


def memory_register(buf: Any) -> None:
    _check(buf)


def memory_deregister(buf: Any) -> None:
    _check(buf)


def bounce_buffer_free() -> int:
    return 0
