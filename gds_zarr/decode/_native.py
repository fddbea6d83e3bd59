"""Native decode kernels for the CPU decoder: one C call per chunk, into the caller's row.

numcodecs' codecs each cost 5-20 us of Python per call around the C work (buffer checks, views,
a new output), all of it holding the GIL: for 16 KiB LZ4 chunks a second decode thread made the
batch *slower*. A kernel here is the C function itself, called through :mod:`ctypes` (which
releases the GIL for the call) with per-thread state, writing into the destination row.

A kernel is ``fn(dst, cap, src, n) -> int``: decode the ``n`` bytes at address ``src`` into the
``cap`` bytes at ``dst``. It returns ``cap`` only when the chunk decoded to exactly ``cap`` bytes
from exactly its ``n`` input bytes; anything else (corrupt data, a gzip of several members,
trailing bytes, a header that disagrees) returns another number, and the caller decodes that
chunk again with numcodecs, whose result or error is the reference. A kernel therefore accepts
a subset of what numcodecs accepts, and gives the same bytes for it.

Libraries: the one numcodecs itself uses where its extension module exports the symbols (its
LZ4 and Blosc modules link them statically), else the system's; gzip and zlib use libdeflate
from the ``deflate`` package, else Python's :mod:`zlib` (which also releases the GIL).
Measurements: benchmarks/results/tuning-*.md.
"""

from __future__ import annotations

import ctypes
import functools
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numcodecs

from gds_zarr.decode import _zstd_native
from gds_zarr.decode._base import BytesStep
from gds_zarr.decode._zstd_native import NativeHandle

__all__ = ["INT_MAX", "Kernel", "blosc_codec_pointers", "blosc_stream_kernels", "kernel_for"]

#: ``fn(dst, cap, src, n) -> int``, see the module docstring.
Kernel = Callable[[int, int, int, int], int]

INT_MAX = _INT_MAX = 2**31 - 1  # LZ4 and Blosc take C ints for sizes
_local = threading.local()


def _load(candidates: Sequence[str], symbols: dict[str, tuple[Any, list[Any]]]) -> Any:
    """The first library of ``candidates`` that loads and has every symbol, bound; or None."""
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)  # CDLL (not PyDLL): calls release the GIL
            for name, (restype, argtypes) in symbols.items():
                fn = getattr(lib, name)
                fn.restype = restype
                fn.argtypes = argtypes
        except (OSError, AttributeError):  # not there, or lacks a symbol
            continue
        return lib
    return None


def _module_file(name: str) -> list[str]:
    """The file of extension module ``name`` (a candidate library), if it imports."""
    try:
        module = __import__(name, fromlist=["_"])
    except ImportError:
        return []
    path = getattr(module, "__file__", None)
    return [str(path)] if path else []


_vp, _sz, _int = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int


@functools.cache
def _lz4() -> Any:
    return _load([*_module_file("numcodecs.lz4"), "liblz4.so.1", "liblz4.dylib"],
                 {"LZ4_decompress_safe": (_int, [_vp, _vp, _int, _int])})


@functools.cache
def _blosc() -> Any:
    return _load([*_module_file("numcodecs.blosc"), "libblosc.so.1", "libblosc.dylib"],
                 {"blosc_decompress_ctx": (_int, [_vp, _vp, _sz, _int])})


@functools.cache
def _libdeflate() -> Any:
    ex = (_int, [_vp, _vp, _sz, _vp, _sz, ctypes.POINTER(_sz), ctypes.POINTER(_sz)])
    return _load([*_module_file("deflate._deflate"), "libdeflate.so.0", "libdeflate.dylib"],
                 {"libdeflate_alloc_decompressor": (_vp, []),
                  "libdeflate_free_decompressor": (None, [_vp]),
                  "libdeflate_gzip_decompress_ex": ex,
                  "libdeflate_zlib_decompress_ex": ex})


def _zstd_kernel() -> Kernel:
    fn, ctx = _zstd_native.thread_decompressor()
    return functools.partial(fn, ctx)  # type: ignore[no-any-return]


def _lz4_kernel() -> Kernel:
    """numcodecs' LZ4 format: a 4-byte little-endian decoded size, then one LZ4 block."""
    decompress = _lz4().LZ4_decompress_safe
    string_at = ctypes.string_at

    def kernel(dst: int, cap: int, src: int, n: int) -> int:
        if not 4 <= n <= _INT_MAX or int.from_bytes(string_at(src, 4), "little") != cap:
            return -1
        return int(decompress(src + 4, dst, n - 4, cap))

    return kernel


def _blosc_kernel() -> Kernel:
    """c-blosc trusts the header's compressed size: callers check it against ``n`` first
    (:func:`gds_zarr.decode.formats.check_blosc`, for the whole batch)."""
    decompress = _blosc().blosc_decompress_ctx

    def kernel(dst: int, cap: int, src: int, n: int) -> int:
        return int(decompress(src, dst, cap, 1))

    return kernel


@functools.cache
def _blosc_inner() -> Any:
    """The codecs inside numcodecs' c-blosc, from its own extension module (it exports them).

    The functions c-blosc's ``blosc_d`` itself calls for each stream, so a stream decodes to the
    same bytes, and is refused in the same cases, as in c-blosc. Each symbol is optional.
    """
    paths = _module_file("numcodecs.blosc")
    if not paths:
        return None
    try:
        lib = ctypes.CDLL(paths[0])
    except OSError:
        return None
    binds = {"LZ4_decompress_safe": (_int, [_vp, _vp, _int, _int]),
             "blosclz_decompress": (_int, [_vp, _int, _vp, _int]),
             "uncompress": (_int, [_vp, ctypes.POINTER(ctypes.c_ulong), _vp, ctypes.c_ulong]),
             "ZSTD_createDCtx": (_vp, []),
             "ZSTD_freeDCtx": (_sz, [_vp]),
             "ZSTD_decompressDCtx": (_sz, [_vp, _vp, _sz, _vp, _sz])}
    for name, (restype, argtypes) in binds.items():
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype, fn.argtypes = restype, argtypes
    return lib


def blosc_stream_kernels() -> dict[int, Kernel]:
    """This thread's kernels for the compressed streams inside Blosc frames, by compressor code.

    Codes as in Blosc's flags byte (0 BloscLZ, 1 LZ4/LZ4HC, 3 Zlib, 4 Zstd); a code missing from
    the dict has no kernel here. A kernel ``fn(dst, cap, src, n)`` returns the bytes decoded
    from the ``n``-byte stream into ``cap`` bytes, as c-blosc's wrapper of that codec does:
    ``blosc_d`` accepts the stream only when that is exactly ``cap``. Call in the decoding
    thread (the Zstd context is the thread's).
    """
    kernels: dict[int, Kernel] | None = getattr(_local, "blosc_streams", None)
    if kernels is not None:
        return kernels
    lib = _blosc_inner()
    kernels = {}
    if lib is not None:
        has = functools.partial(hasattr, lib)
        if has("LZ4_decompress_safe"):
            lz4 = lib.LZ4_decompress_safe
            kernels[1] = lambda dst, cap, src, n: int(lz4(src, dst, n, cap))
        if has("blosclz_decompress"):
            blz = lib.blosclz_decompress
            kernels[0] = lambda dst, cap, src, n: int(blz(src, n, dst, cap))
        if has("uncompress"):
            kernels[3] = _blosc_zlib_kernel(lib.uncompress)
        if has("ZSTD_createDCtx") and has("ZSTD_freeDCtx") and has("ZSTD_decompressDCtx"):
            ctx = _local.blosc_zstd = NativeHandle(lib.ZSTD_createDCtx, lib.ZSTD_freeDCtx,
                                                   "ZSTD_createDCtx")
            zd, c = lib.ZSTD_decompressDCtx, ctx.ptr
            # c-blosc calls ZSTD_decompress: the same decoder with a fresh context
            kernels[4] = lambda dst, cap, src, n: int(zd(c, dst, cap, src, n))
    _local.blosc_streams = kernels
    return kernels


def blosc_codec_pointers() -> tuple[int | None, ...] | None:
    """Addresses of c-blosc's own BloscLZ, LZ4, Zlib and Zstd stream decoders (None where
    absent) and of this thread's Zstd context, for C code that calls them (the kernels of
    :func:`blosc_stream_kernels`, without ctypes per stream); None without numcodecs' c-blosc.
    """
    lib = _blosc_inner()
    if lib is None:
        return None
    blosc_stream_kernels()  # makes this thread's Zstd context where Zstd exists
    ctx: NativeHandle | None = getattr(_local, "blosc_zstd", None)

    def addr(name: str) -> int | None:
        fn = getattr(lib, name, None)
        return None if fn is None else ctypes.cast(fn, ctypes.c_void_p).value

    return (addr("blosclz_decompress"), addr("LZ4_decompress_safe"), addr("uncompress"),
            addr("ZSTD_decompressDCtx") if ctx is not None else None,
            ctx.ptr if ctx is not None else None)


def _blosc_zlib_kernel(uncompress: Any) -> Kernel:
    """c-blosc's ``zlib_wrap_decompress``: ``uncompress`` must return Z_OK (0)."""
    made = ctypes.c_ulong()
    made_p = ctypes.byref(made)

    def kernel(dst: int, cap: int, src: int, n: int) -> int:
        made.value = cap
        if uncompress(dst, made_p, src, n) != 0:
            return -1
        return int(made.value)

    return kernel


def _deflate_kernel(fmt: str) -> Kernel:
    lib = _libdeflate()
    state: NativeHandle | None = getattr(_local, "deflater", None)
    if state is None:  # one decompressor per thread, freed with the thread's locals
        state = _local.deflater = NativeHandle(lib.libdeflate_alloc_decompressor,
                                               lib.libdeflate_free_decompressor,
                                               "libdeflate_alloc_decompressor")
    decompress = getattr(lib, f"libdeflate_{fmt}_decompress_ex")
    used, made = _sz(), _sz()
    used_p, made_p = ctypes.byref(used), ctypes.byref(made)
    d = state.ptr

    def kernel(dst: int, cap: int, src: int, n: int) -> int:
        if decompress(d, src, n, dst, cap, used_p, made_p) != 0 or used.value != n:
            return -1  # corrupt, truncated, or more after the first stream: numcodecs decides
        return int(made.value)

    return kernel


def _zlib_kernel(wbits: int) -> Kernel:
    """Python's zlib (no libdeflate): one stream, wholly consumed, exactly ``cap`` bytes."""
    buffer_at = ctypes.c_char

    def kernel(dst: int, cap: int, src: int, n: int) -> int:
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress((buffer_at * n).from_address(src), cap)
        except zlib.error:
            return -1
        if not d.eof or d.unused_data or d.unconsumed_tail or len(out) != cap:
            return -1
        ctypes.memmove(dst, out, cap)
        return cap

    return kernel


def kernel_for(steps: Sequence[BytesStep], decoded_nbytes: int) -> Callable[[], Kernel] | None:
    """A factory of per-thread kernels for a one-step chain, or None (use numcodecs).

    Call the factory once in each decoding thread; its kernel keeps that thread's state.
    """
    if len(steps) != 1:
        return None
    step = steps[0]
    codec = step.codec
    if step.kind == "zstd" and isinstance(codec, numcodecs.Zstd) and _zstd_native.available():
        return _zstd_kernel
    if decoded_nbytes > _INT_MAX:
        return None
    if step.kind == "lz4" and isinstance(codec, numcodecs.LZ4) and _lz4() is not None:
        return _lz4_kernel
    if step.kind == "blosc" and isinstance(codec, numcodecs.Blosc) and _blosc() is not None:
        return _blosc_kernel
    fmt = {"gzip": "gzip", "zlib": "zlib"}.get(step.kind)
    expected = {"gzip": numcodecs.GZip, "zlib": numcodecs.Zlib}.get(step.kind)
    if fmt is None or expected is None or not isinstance(codec, expected):
        return None
    if _libdeflate() is not None:
        return functools.partial(_deflate_kernel, fmt)
    return functools.partial(_zlib_kernel, 31 if fmt == "gzip" else 15)
