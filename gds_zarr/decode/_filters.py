"""HDF5's filter chains: a Fletcher-32 trailer, one compressor, a byte shuffle, per chunk in one
pass on the CPU (the GPU's kernels are in :mod:`gds_zarr.decode._filters_gpu`).

netCDF4 and HDF5 files filter each chunk through shuffle, then deflate, then fletcher32;
VirtualiZarr describes those as the codecs ``numcodecs.shuffle`` (``elementsize``: the item
size), ``numcodecs.zlib`` and ``numcodecs.fletcher32``, which decode in the reverse order:
check and strip the 4-byte checksum, inflate, undo the shuffle. numcodecs runs three Python
calls per chunk, each allocating its output. Here (:func:`split_chain`, :func:`decode_chunk`):

* the checksum is numcodecs' own ``Fletcher32`` (HDF5's variant), on a view: no copy;
* the compressor is its native kernel (:mod:`gds_zarr.decode._native`: libdeflate for zlib and
  gzip, GIL released), decoding into a per-thread scratch row (into the row itself without a
  shuffle);
* the unshuffle is the C kernel of the Blosc twin (``_blosc_native.c``: HDF5's shuffle of a
  chunk is Blosc's byte shuffle of one block), else numpy's, from the scratch into the row.

A chunk any of these refuses (a checksum mismatch, a stream the kernel does not take exactly)
returns False, and the CPU decoder decodes it again with numcodecs, step by step: its result
or error is the reference, as for every native path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numcodecs
import numpy as np

from gds_zarr.decode import _blosc_native, _native
from gds_zarr.decode._base import BytesStep
from gds_zarr.planning.blosc import SHUFFLE_BYTE, unshuffle_span

__all__ = ["FilterChain", "decode_chunk", "split_chain"]

_COMPRESSORS = frozenset({"zlib", "gzip", "zstd", "lz4"})


@dataclass(frozen=True, slots=True)
class FilterChain:
    """A chain of ``[fletcher32] [compressor] [shuffle]`` steps (decode order), at least two.

    Attributes
    ----------
    checksum
        The numcodecs ``Fletcher32`` of a first step, else None.
    kernel
        The compressor's native kernel factory (:func:`gds_zarr.decode._native.kernel_for`),
        else None (no compressor: the bytes are copied).
    elementsize
        The shuffle's element size; 1 without a shuffle (or one that moves nothing).
    """

    checksum: Any
    kernel: Callable[[], _native.Kernel] | None
    elementsize: int


def _fletcher32_class() -> type | None:
    try:
        from numcodecs.fletcher32 import Fletcher32
    except ImportError:  # pragma: no cover - every numcodecs gds_zarr supports has it
        return None
    return Fletcher32  # type: ignore[no-any-return]


def split_chain(steps: Sequence[BytesStep], decoded_nbytes: int) -> FilterChain | None:
    """The chain as a :class:`FilterChain`, or None when it is not one this module decodes.

    Accepted: an optional numcodecs ``Fletcher32`` first, an optional compressor with a native
    kernel (zlib, gzip, zstd, LZ4), an optional numcodecs ``Shuffle`` last whose element size
    divides ``decoded_nbytes``; two of the three at least (a lone compressor has its own path).
    """
    rest = list(steps)
    checksum = None
    fletcher = _fletcher32_class()
    if rest and rest[0].kind == "fletcher32" and fletcher is not None \
            and type(rest[0].codec) is fletcher:
        checksum = rest.pop(0).codec
    elementsize = 0
    if rest and rest[-1].kind == "shuffle" and type(rest[-1].codec) is numcodecs.Shuffle:
        elementsize = int(rest.pop().codec.elementsize)
        if elementsize <= 0 or decoded_nbytes % max(elementsize, 1):
            return None  # numcodecs refuses those: its error is the answer
    kernel = None
    if rest:
        if len(rest) != 1 or rest[0].kind not in _COMPRESSORS:
            return None
        kernel = _native.kernel_for(rest, decoded_nbytes)
        if kernel is None:
            return None
    if (checksum is not None) + (kernel is not None) + (elementsize > 0) < 2:
        return None
    return FilterChain(checksum, kernel, max(elementsize, 1))


def unshuffle(src: np.ndarray, dst: np.ndarray, elementsize: int) -> None:
    """Undo numcodecs' (HDF5's) byte shuffle of a whole chunk: ``src`` into ``dst`` (1-D uint8
    arrays of one length, a multiple of ``elementsize``, not overlapping)."""
    if _blosc_native.library() is not None and elementsize <= 255:
        _blosc_native.unshuffle(src, dst, src.nbytes, SHUFFLE_BYTE, elementsize)
    else:
        unshuffle_span(src, dst, src.nbytes, SHUFFLE_BYTE, elementsize)


def decode_chunk(chain: FilterChain, fn: _native.Kernel | None, data: np.ndarray, base: int,
                 offset: int, size: int, row: np.ndarray, scratch: np.ndarray | None) -> bool:
    """Decode the ``size`` bytes at ``offset`` of ``data`` (host address ``base``) into ``row``.

    Parameters
    ----------
    chain
        From :func:`split_chain`.
    fn
        This thread's kernel from ``chain.kernel`` (None without a compressor).
    scratch
        A row-sized buffer of this thread (needed with a shuffle).

    Returns
    -------
    bool
        False when a step refuses the chunk (decode it with numcodecs, the reference).
    """
    if chain.checksum is not None:
        if size < 4:
            return False
        try:
            chain.checksum.decode(data[offset: offset + size])
        except Exception:  # noqa: BLE001 - numcodecs says why, when the chunk is decoded again
            return False
        size -= 4
    dst = row if chain.elementsize == 1 else scratch
    assert dst is not None
    if fn is not None:
        if fn(dst.ctypes.data, dst.nbytes, base + offset, size) != dst.nbytes:
            return False
    elif size != dst.nbytes:
        return False
    else:
        dst[...] = data[offset: offset + size]
    if chain.elementsize > 1:
        unshuffle(dst, row, chain.elementsize)
    return True
