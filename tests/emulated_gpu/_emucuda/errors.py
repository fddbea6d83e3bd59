"""Errors of the emulated CUDA device, shaped like the real libraries' own.

``CUDARuntimeError`` mirrors ``cupy_backends.cuda.api.runtime.CUDARuntimeError``: ``status`` is
the ``cudaError_t`` value and the message is ``"<name>: <cudaGetErrorString text>"``.
"""

from __future__ import annotations

#: cudaError_t values the emulator raises, with CUDA's names and messages.
ERRORS: dict[int, tuple[str, str]] = {
    1: ("cudaErrorInvalidValue", "invalid argument"),
    2: ("cudaErrorMemoryAllocation", "out of memory"),
    100: ("cudaErrorNoDevice", "no CUDA-capable device is detected"),
    101: ("cudaErrorInvalidDevice", "invalid device ordinal"),
    400: ("cudaErrorInvalidResourceHandle", "invalid resource handle"),
    600: ("cudaErrorNotReady", "device not ready"),
    700: ("cudaErrorIllegalAddress", "an illegal memory access was encountered"),
    701: ("cudaErrorLaunchOutOfResources", "too many resources requested for launch"),
    9: ("cudaErrorInvalidConfiguration", "invalid configuration argument"),
}

#: Errors after which the context is unusable for the rest of the process.
STICKY = frozenset({700})


class CUDARuntimeError(RuntimeError):
    """A CUDA runtime API error (``status``: the cudaError_t value), as CuPy's: constructed
    from the status alone; the emulator adds what it saw with :func:`runtime_error`."""

    def __init__(self, status: int) -> None:
        self.status = int(status)
        name, text = ERRORS.get(self.status, (f"cudaError{self.status}", "unknown error"))
        super().__init__(f"{name}: {text}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.status,))


def runtime_error(status: int, detail: str = "") -> CUDARuntimeError:
    """``CUDARuntimeError(status)`` whose message also says what the emulator saw."""
    e = CUDARuntimeError(status)
    if detail:
        e.args = (f"{e.args[0]} [emulated device: {detail}]",)
    return e


class Fault(Exception):
    """An out-of-bounds access found by the emulator while running device work.

    Raised inside the work itself; the stream scheduler turns it into a sticky
    ``CUDARuntimeError(700)`` (as the hardware reports an illegal address) at the
    synchronization point, poisoning the device's context.
    """


class OutOfMemoryError(MemoryError):
    """Mirrors ``cupy.cuda.memory.OutOfMemoryError(size, total, limit=0)``."""

    def __init__(self, size: int, total: int, limit: int = 0) -> None:
        self._size, self._total, self._limit = size, total, limit
        msg = (f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes"
               + (f", limit set to: {limit:,} bytes" if limit else "") + ").")
        super().__init__(msg)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self._size, self._total, self._limit))
