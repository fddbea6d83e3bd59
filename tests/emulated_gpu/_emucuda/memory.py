"""Device and pinned host memory of the emulated CUDA device.

Every allocation is its own anonymous mapping with an inaccessible guard page on each side,
placed so that it ends exactly at the trailing guard. Device addresses are therefore real
host addresses: kernels compiled for the host (``kernels.py``) use them directly, and an access
past the end of an allocation (rounded up to 512 bytes, CuPy's pool granule, as on hardware)
faults instead of reading a neighbour. Everything else that touches device memory (copies,
kvikio reads, nvCOMP calls) goes through :func:`view`, which checks the whole range against the
allocation it starts in and raises :class:`~errors.Fault` naming the call.

Host code cannot read device memory through the public API (the CuPy stand-in refuses
``numpy.asarray``); only the emulator's own modules use :func:`view`.
"""

from __future__ import annotations

import bisect
import ctypes
import mmap
import os
import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from . import devices as _devices
from .errors import Fault, OutOfMemoryError, runtime_error

__all__ = ["GRANULE", "Allocation", "allocate", "check", "describe", "find", "view"]

GRANULE = 512
_PAGE = mmap.PAGESIZE
#: Bytes of memory each emulated device has (env EMULATED_GPU_MEMORY, default 16 GiB).
DEVICE_MEMORY = int(os.environ.get("EMULATED_GPU_MEMORY", 16 << 30))

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                  ctypes.c_long]
_mprotect = _libc.mprotect
_mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_munmap = _libc.munmap
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_PROT_NONE, _PROT_RW = 0, 3
_MAP_PRIVATE, _MAP_ANONYMOUS, _MAP_NORESERVE = 0x02, 0x20, 0x4000
_MAP_FAILED = ctypes.c_void_p(-1).value

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _site() -> str:
    """``file:line`` of the first caller outside the emulator (for messages)."""
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename.startswith(_HERE):
        f = f.f_back
    if f is None:
        return "?"
    name = f.f_code.co_filename
    for marker in ("/gds_zarr/", "/tests_gpu/", "/tests/", "/site-packages/"):
        if marker in name:
            name = name[name.rindex(marker) + 1:]
            break
    return f"{name}:{f.f_lineno}"


@dataclass(eq=False)
class Allocation:
    """One allocation: ``[ptr, ptr + capacity)`` is usable, ``size`` was asked for.

    ``device`` is the CUDA device id, or -1 for pinned host memory.
    """

    ptr: int
    size: int
    capacity: int
    device: int
    site: str
    _region: int = 0
    _region_len: int = 0
    freed: bool = False
    #: Queued work items that use the allocation (never unmapped while > 0).
    pending: int = 0
    #: The pool arena of the stream it was allocated on (CuPy's pool reuses a block on that
    #: stream only; the per-thread default stream: in that thread only, see pool_stream).
    stream: int = 0
    _array: np.ndarray | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return "pinned host" if self.device < 0 else f"device {self.device}"

    def describe(self) -> str:
        return (f"a {self.size}-byte {self.kind} allocation at 0x{self.ptr:x} "
                f"(allocated at {self.site})")

    def array(self) -> np.ndarray:
        """The whole allocation as a writable uint8 numpy array (emulator use only)."""
        if self._array is None:
            if self.capacity == 0:
                self._array = np.zeros(0, np.uint8)
            else:
                raw = (ctypes.c_ubyte * self.capacity).from_address(self.ptr)
                self._array = np.frombuffer(raw, np.uint8)
        return self._array


_lock = threading.RLock()  # a __del__ (garbage collection) may free while we hold it
_starts: list[int] = []
_allocs: list[Allocation] = []
_in_use: dict[int, int] = {}  # device -> bytes


def allocate(nbytes: int, device: int) -> Allocation:
    """A new allocation of ``nbytes`` on ``device`` (-1: pinned host memory).

    Raises
    ------
    OutOfMemoryError
        More than :data:`DEVICE_MEMORY` would be in use on the device.
    """
    nbytes = int(nbytes)
    if nbytes < 0:
        raise ValueError(f"negative allocation size {nbytes}")
    site = _site()
    if device >= 0:
        _devices.note_context(device)  # cudaMalloc initializes the device's primary context
    if nbytes == 0:
        return Allocation(0, 0, 0, device, site)
    capacity = -(-nbytes // GRANULE) * GRANULE
    with _lock:
        used = _in_use.get(device, 0)
        if device >= 0 and used + capacity > DEVICE_MEMORY:
            raise OutOfMemoryError(nbytes, used)
        _in_use[device] = used + capacity
    data_len = -(-capacity // _PAGE) * _PAGE
    region_len = data_len + 2 * _PAGE
    region = _mmap(None, region_len, _PROT_NONE, _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE,
                   -1, 0)
    if region in (None, _MAP_FAILED):
        with _lock:
            _in_use[device] -= capacity
        raise OutOfMemoryError(nbytes, used)
    if _mprotect(region + _PAGE, data_len, _PROT_RW) != 0:
        _munmap(region, region_len)
        raise OSError(ctypes.get_errno(), "mprotect failed")
    ptr = region + _PAGE + data_len - capacity  # ends at the trailing guard page
    a = Allocation(ptr, nbytes, capacity, device, site, region, region_len)
    if device >= 0:
        from .streams import pool_stream

        a.stream = pool_stream(device)
    with _lock:
        i = bisect.bisect_left(_starts, ptr)
        _starts.insert(i, ptr)
        _allocs.insert(i, a)
    return a


def free(a: Allocation) -> None:
    """Unmap ``a`` (idempotent). Later accesses to it fault."""
    if a.freed or a.capacity == 0:
        a.freed = True
        return
    with _lock:
        if a.freed:
            return
        a.freed = True
        i = bisect.bisect_left(_starts, a.ptr)
        if i < len(_allocs) and _allocs[i] is a:
            del _starts[i], _allocs[i]
        _in_use[a.device] -= a.capacity
    a._array = None
    _munmap(a._region, a._region_len)


def in_use(device: int) -> int:
    """Bytes allocated on ``device`` now (granules)."""
    with _lock:
        return _in_use.get(device, 0)


def find(ptr: int) -> Allocation | None:
    """The live allocation whose usable range holds address ``ptr``, or None."""
    with _lock:
        i = bisect.bisect_right(_starts, ptr) - 1
        if i >= 0:
            a = _allocs[i]
            if ptr < a.ptr + a.capacity:
                return a
    return None


def describe(ptr: int) -> str:
    """Where address ``ptr`` lies, for a fault message."""
    a = find(ptr)
    if a is not None:
        return f"{ptr - a.ptr} bytes into {a.describe()}"
    with _lock:
        i = bisect.bisect_right(_starts, ptr) - 1
        near = _allocs[i] if i >= 0 else None
    if near is not None and ptr - (near.ptr + near.capacity) < _PAGE:
        return (f"{ptr - near.ptr - near.size} bytes past the end of {near.describe()} "
                f"(usable up to {near.capacity} bytes: CuPy's 512-byte granule)")
    return "outside every allocation"


def check(ptr: int, nbytes: int, what: str, *, device: int | None = None,
          host: bool = False) -> Allocation | None:
    """Check that ``[ptr, ptr + nbytes)`` lies inside one live allocation.

    Parameters
    ----------
    ptr, nbytes
        The range an operation touches.
    what
        The operation, for the message (e.g. ``"memcpyAsync destination"``).
    device
        The device the operation runs on: device memory of another device is refused.
    host
        The range may be host memory the emulator did not allocate (pageable memory): it is
        then not checked and None is returned.

    Raises
    ------
    Fault
        The range is not inside one live allocation (or lies on another device).
    """
    ptr, nbytes = int(ptr), int(nbytes)
    if nbytes < 0:
        raise Fault(f"{what}: negative size {nbytes}")
    a = find(ptr)
    if a is None:
        if host:
            return None
        if nbytes == 0:
            return None
        raise Fault(f"{what}: {nbytes} bytes at 0x{ptr:x}: {describe(ptr)}")
    if ptr + nbytes > a.ptr + a.capacity:
        over = ptr + nbytes - a.ptr - a.size
        raise Fault(f"{what}: {nbytes} bytes at offset {ptr - a.ptr} run {over} bytes past the "
                    f"end of {a.describe()} (usable up to {a.capacity} bytes: CuPy's 512-byte "
                    f"granule)")
    if device is not None and a.device >= 0 and a.device != device:
        raise Fault(f"{what}: 0x{ptr:x} is memory of device {a.device}, used on device {device}")
    return a


def view(ptr: int, nbytes: int, what: str, *, device: int | None = None) -> np.ndarray:
    """A checked, writable uint8 view of ``[ptr, ptr + nbytes)`` (see :func:`check`).

    Pageable host memory (not allocated by the emulator) is viewed unchecked.
    """
    a = check(ptr, nbytes, what, device=device, host=True)
    if nbytes == 0:
        return np.zeros(0, np.uint8)
    if a is None:
        raw = (ctypes.c_ubyte * int(nbytes)).from_address(int(ptr))
        return np.frombuffer(raw, np.uint8)
    off = int(ptr) - a.ptr
    return a.array()[off: off + int(nbytes)]


def reset_accounting() -> None:
    """Forget the use counts of devices (after a test freed everything)."""
    with _lock:
        for d in list(_in_use):
            _in_use[d] = sum(a.capacity for a in _allocs if a.device == d)


def check_device(device: int, count: int) -> None:
    if not 0 <= int(device) < count:
        raise runtime_error(101, f"device {device} of {count}")
