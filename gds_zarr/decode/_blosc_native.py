"""gds_zarr's own C kernels for Blosc on the CPU (``_blosc_native.c``), through ctypes.

The CPU twin of the GPU Blosc path (:mod:`gds_zarr.planning.blosc` plans a batch, the native
stream codecs decode it) needs an unshuffle as fast as c-blosc's SIMD one: numpy's took ~5x
longer. ``_blosc_native.c`` has it (SSE2, AVX2 chosen at run time, a portable scalar path) and
a decoder of one planned chunk that calls the codecs inside numcodecs' c-blosc block by block,
so a chunk costs one call, like c-blosc, with the GIL released (ctypes ``CDLL``).

The library is an optional extension module built by ``setup.py`` (``pip install`` compiles it
where a C compiler exists). Where it is missing, :func:`library` is None and the CPU decoder
runs the plan in Python with the numpy unshuffle (same bytes, slower); ``GDS_ZARR_NO_NATIVE=1``
forces that, for tests and comparisons.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gds_zarr.decode import _native
from gds_zarr.planning.blosc import BloscPlan

__all__ = ["ENV_DISABLE", "RowDecoder", "library", "simd_level", "unshuffle"]

#: Environment variable that, set to 1, leaves the library unloaded (the numpy twin runs).
ENV_DISABLE = "GDS_ZARR_NO_NATIVE"
_NAME = "_blosc_native_lib"
_vp, _i64, _int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_local = threading.local()


class _Plan(ctypes.Structure):
    """``struct gz_plan``: pointers into the arrays of a :class:`BloscPlan`."""

    _fields_ = [("base", _vp), ("stream_bounds", _vp), ("block_bounds", _vp),
                ("stream_src", _vp), ("stream_size", _vp), ("stream_dst", _vp),
                ("stream_dsize", _vp), ("stream_codec", _vp), ("block_dst", _vp),
                ("block_size", _vp), ("block_shuffle", _vp), ("typesize", _vp), ("rows", _i64)]


class _Codecs(ctypes.Structure):
    """``struct gz_codecs``: the codec functions inside numcodecs' c-blosc."""

    _fields_ = [("blosclz", _vp), ("lz4", _vp), ("zlib", _vp), ("zstd", _vp),
                ("zstd_ctx", _vp)]


def _path() -> Path | None:
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = here / f"{_NAME}{suffix}"
        if p.is_file():
            return p
    return None


@functools.cache
def library() -> Any:
    """The loaded kernel library with its functions bound, or None (not built, or disabled)."""
    if os.environ.get(ENV_DISABLE, "") not in ("", "0"):
        return None
    path = _path()
    if path is None:
        return None
    # A broken or foreign build (it does not load, or lacks a symbol): None, the numpy twin runs.
    return _native._load([str(path)], {
        "gz_unshuffle": (_int, [_vp, _vp, _i64, _i64, _i64, _int, _vp]),
        "gz_blosc_decode_row": (_int, [ctypes.POINTER(_Plan), ctypes.POINTER(_Codecs),
                                       _vp, _i64, _i64, _vp, _i64]),
        "gz_simd_level": (_int, []),
        "gz_set_simd_level": (_int, [_int])})


def simd_level() -> str | None:
    """The unshuffle's vector path here ("avx2", "sse2", "scalar"), or None without the library."""
    lib = library()
    if lib is None:
        return None
    return ("scalar", "sse2", "avx2")[lib.gz_simd_level()]


def _scratch(nbytes: int) -> np.ndarray:
    """This thread's scratch buffer of at least ``nbytes`` bytes."""
    buf: np.ndarray | None = getattr(_local, "scratch", None)
    if buf is None or buf.nbytes < nbytes:
        buf = _local.scratch = np.empty(max(nbytes, 1), np.uint8)
    return buf


def unshuffle(src: np.ndarray, dst: np.ndarray, block: int, shuffle: int, typesize: int) -> None:
    """:func:`gds_zarr.planning.blosc.unshuffle_span` in C (same arguments, same bytes).

    Raises
    ------
    RuntimeError
        Without the library.
    ValueError
        For arrays that are not contiguous uint8 of one length, or a span the C code refuses
        (a length that is not a multiple of ``block``, a bit shuffle of ``m % 8 != 0`` items).
    """
    lib = library()
    if lib is None:
        raise RuntimeError("gds_zarr's C kernels are not built (see setup.py)")
    if (src.dtype != np.uint8 or dst.dtype != np.uint8 or src.nbytes != dst.nbytes
            or not src.flags.c_contiguous or not dst.flags.c_contiguous):
        raise ValueError("src and dst must be contiguous uint8 arrays of the same length")
    scratch = _scratch(block)
    if lib.gz_unshuffle(src.ctypes.data, dst.ctypes.data, src.nbytes, block, typesize, shuffle,
                        scratch.ctypes.data) != 0:
        raise ValueError(f"no valid span: {src.nbytes} bytes in blocks of {block}, "
                         f"shuffle {shuffle}, typesize {typesize}")


def _codecs() -> _Codecs | None:
    """This thread's codec table (its own Zstd context), or None without c-blosc's codecs."""
    table: _Codecs | None = getattr(_local, "codecs", None)
    if table is None:
        found = _native.blosc_codec_pointers()
        if found is None:
            return None
        table = _local.codecs = _Codecs(*found)
    return table


class RowDecoder:
    """Decode the chunks of one :class:`BloscPlan` with one C call each.

    Build it in the calling thread; :meth:`decode` may run in any thread (each uses its own
    scratch buffer and Zstd context). The plan's arrays and ``data`` must outlive it.

    Parameters
    ----------
    plan
        The batch plan (rows in the order of the batch's chunks).
    data
        The uint8 buffer the plan's stream offsets are relative to.
    """

    def __init__(self, plan: BloscPlan, data: np.ndarray) -> None:
        lib = library()
        if lib is None:
            raise RuntimeError("gds_zarr's C kernels are not built (see setup.py)")
        self._fn = lib.gz_blosc_decode_row
        i64 = [np.ascontiguousarray(a, np.int64) for a in (
            plan.stream_bounds, plan.block_bounds, plan.stream_src, plan.stream_size,
            plan.stream_dst, plan.stream_dsize)]
        s_codec = np.ascontiguousarray(plan.stream_codec, np.int8)
        b_dst = np.ascontiguousarray(plan.block_dst, np.int64)
        b_size = np.ascontiguousarray(plan.block_size, np.int64)
        b_shuffle = np.ascontiguousarray(plan.block_shuffle, np.int8)
        typesize = np.ascontiguousarray(plan.typesize, np.int64)
        self._keep = (*i64, s_codec, b_dst, b_size, b_shuffle, typesize, data)
        self._plan = _Plan(data.ctypes.data if data.nbytes else 0,
                           *(a.ctypes.data for a in i64), s_codec.ctypes.data,
                           b_dst.ctypes.data, b_size.ctypes.data, b_shuffle.ctypes.data,
                           typesize.ctypes.data, len(plan.codec))
        self._plan_p = ctypes.byref(self._plan)
        # scratch: a shuffled block's streams, and the bit planes of a bit-shuffled one
        self._scratch = 2 * int(b_size[b_shuffle != 0].max(initial=0))

    def bind(self) -> Callable[[int, int, int], int] | None:
        """This thread's ``decode(row, dst, nbytes) -> int``, or None without c-blosc's codecs.

        ``decode`` decodes chunk ``row`` into the ``nbytes`` bytes at address ``dst`` and returns
        0 when done; 1 when a stream did not decode to exactly its size or its codec is missing
        (decode that chunk with c-blosc or numcodecs, the reference); -1 when the arguments
        disagree with the plan. Call ``bind`` in the thread that decodes.
        """
        codecs = _codecs()
        if codecs is None:
            return None
        scratch = _scratch(self._scratch)
        # the ctypes function itself with its leading arguments bound: no Python frame per call
        decode = functools.partial(self._fn, self._plan_p, ctypes.byref(codecs),
                                   scratch.ctypes.data, scratch.nbytes)
        # The partial holds only the scratch's address: keep the array alive with it, should
        # this thread's scratch be replaced by a larger one before the decoder is done.
        decode.scratch = scratch  # type: ignore[attr-defined]
        return decode
