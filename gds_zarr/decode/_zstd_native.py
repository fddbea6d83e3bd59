"""zstd decompression straight into a caller's buffer, with one reusable context per thread.

numcodecs' ``Zstd.decode`` calls ``ZSTD_decompress``, which allocates and initialises a fresh
decompression context (about 100 KiB) for every chunk; python-zstandard reuses its context but
holds the GIL while it decodes (its C backend) and always returns a new ``bytes``. For thousands
of 16 KiB chunks that per-chunk overhead is a third of the decode time, and holding the GIL stops
a second thread from helping. Here libzstd's ``ZSTD_decompressDCtx`` is called through
:mod:`ctypes` (which releases the GIL for the call) with a context kept per thread, writing into
the destination row: no allocation, no copy, and threads decode in parallel.

The library is numcodecs' own zstd extension module, which links libzstd statically and exports
its symbols, else the system's ``libzstd``. Where neither works, :func:`available`
is False and callers use numcodecs. Both are the same C function numcodecs calls, so the accepted
inputs and the errors match (measurements: benchmarks/results/tuning-*.md).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

__all__ = ["NativeHandle", "ZstdError", "available", "decompress_into", "thread_decompressor"]

_MIN_VERSION = 10400  # ZSTD_decompressDCtx and ZSTD_getErrorName are stable since 1.4.0


class ZstdError(Exception):
    """libzstd rejected a frame (message: libzstd's error name)."""


_lib: Any = None
_loaded = False
_load_lock = threading.Lock()
_local = threading.local()


def _candidates() -> list[str]:
    # numcodecs' own copy first: the very code numcodecs (and so zarr) runs, so even a corrupt
    # frame without a checksum decodes to the same bytes (libzstd versions differ there).
    names = []
    try:
        import numcodecs.zstd as nz

        names.append(str(nz.__file__))
    except ImportError:  # numcodecs without zstd: only a system library can serve
        pass
    return [*names, "libzstd.so.1", "libzstd.1.dylib", "libzstd.dylib"]


def _bind(path: str) -> Any:
    lib = ctypes.CDLL(path)  # CDLL (not PyDLL): calls release the GIL
    lib.ZSTD_versionNumber.restype = ctypes.c_uint
    lib.ZSTD_versionNumber.argtypes = []
    if lib.ZSTD_versionNumber() < _MIN_VERSION:
        raise OSError(f"{path}: libzstd older than 1.4.0")
    lib.ZSTD_createDCtx.restype = ctypes.c_void_p
    lib.ZSTD_createDCtx.argtypes = []
    lib.ZSTD_freeDCtx.restype = ctypes.c_size_t
    lib.ZSTD_freeDCtx.argtypes = [ctypes.c_void_p]
    lib.ZSTD_decompressDCtx.restype = ctypes.c_size_t
    lib.ZSTD_decompressDCtx.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                        ctypes.c_void_p, ctypes.c_size_t]
    lib.ZSTD_isError.restype = ctypes.c_uint
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    lib.ZSTD_getErrorName.restype = ctypes.c_char_p
    lib.ZSTD_getErrorName.argtypes = [ctypes.c_size_t]
    return lib


def _library() -> Any:
    global _lib, _loaded
    if _loaded:
        return _lib
    with _load_lock:
        if not _loaded:
            for path in _candidates():
                try:
                    _lib = _bind(path)
                    break
                except (OSError, AttributeError):  # not there, or lacks a symbol
                    continue
            _loaded = True
    return _lib


def available() -> bool:
    """True when a usable libzstd was found (loaded on the first call)."""
    return _library() is not None


class NativeHandle:
    """A C object one thread owns (a decompression context), freed with the thread's locals.

    Parameters
    ----------
    create, free
        The C constructor (no arguments, returns a pointer) and destructor.
    what
        The constructor's name, for the error when it returns NULL.
    """

    __slots__ = ("free", "ptr")

    def __init__(self, create: Any, free: Any, what: str) -> None:
        self.free = free
        self.ptr = create()
        if not self.ptr:
            raise MemoryError(f"{what} failed")

    def __del__(self) -> None:
        if self.ptr:
            self.free(self.ptr)
            self.ptr = None


def _context() -> int:
    """This thread's ZSTD_DCtx pointer."""
    ctx: NativeHandle | None = getattr(_local, "dctx", None)
    if ctx is None:
        lib = _library()
        ctx = _local.dctx = NativeHandle(lib.ZSTD_createDCtx, lib.ZSTD_freeDCtx,
                                         "ZSTD_createDCtx")
    return ctx.ptr  # type: ignore[no-any-return]


def decompress_into(dst_ptr: int, dst_capacity: int, src_ptr: int, src_size: int) -> int:
    """Decompress the zstd frame(s) at ``src_ptr`` into ``dst_ptr``; return the bytes written.

    The caller keeps both buffers alive and owns them (numpy arrays: ``arr.ctypes.data``).
    Call only after :func:`available` returned True.

    Parameters
    ----------
    dst_ptr, dst_capacity
        Address and size of the destination.
    src_ptr, src_size
        Address and size of the encoded bytes.

    Returns
    -------
    int
        Decoded bytes written (at most ``dst_capacity``).

    Raises
    ------
    ZstdError
        The frame is corrupt, or decodes to more than ``dst_capacity`` bytes.
    """
    lib = _library()
    n = lib.ZSTD_decompressDCtx(_context(), dst_ptr, dst_capacity, src_ptr, src_size)
    if lib.ZSTD_isError(n):
        raise ZstdError(lib.ZSTD_getErrorName(n).decode("ascii", "replace"))
    return int(n)


def thread_decompressor() -> tuple[Any, int]:
    """``(fn, ctx)`` for a tight loop in this thread: ``fn(ctx, dst, cap, src, size)`` is
    ``ZSTD_decompressDCtx`` itself (a result other than the expected size is an error code or
    a wrong size). Call only after :func:`available` returned True."""
    return _library().ZSTD_decompressDCtx, _context()
