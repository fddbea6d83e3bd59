"""HDF5's filters on the GPU: the Fletcher-32 check and the byte unshuffle, one kernel launch
each per batch (the compressor between them is nvCOMP's, in :mod:`gds_zarr.decode._gpu`).

* :func:`check_fletcher32` verifies every chunk's 4-byte trailer with a segmented kernel (one
  thread per 4 KiB, as the CRC and Adler kernels): HDF5's Fletcher-32 sums big-endian 16-bit
  words, ``sum1 = S mod 65535`` and ``sum2 = T mod 65535`` with ``S`` the words' sum and ``T``
  the sum of the running sums (word ``i`` of ``N`` weighs ``N - i``), each kept as ``65535``
  where it is a nonzero multiple (the folding of H5checksum.c never reaches 0 from a nonzero
  sum); a trailing odd byte is a word with a zero low byte. Each segment adds its exact ``S``
  and its ``T`` modulo 65535 (its own weights plus the words after it times its ``S``) to its
  chunk's two counters; the host folds them (:func:`fold_fletcher32`).
* :func:`unshuffle` undoes numcodecs' (HDF5's) byte shuffle of whole chunks: byte ``b`` of item
  ``i`` lies at ``b * m + i`` (``m`` items), one thread per output byte, a grid column per chunk.

CuPy is imported lazily: importing this module needs no GPU.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from gds_zarr.decode import formats
from gds_zarr.errors import ChunkDecodeError

__all__ = [
    "FILTER_KERNELS",
    "check_fletcher32",
    "fletcher32_segments",
    "fold_fletcher32",
    "unshuffle",
    "unshuffle_grid",
]

_SEGMENT = 4096   # bytes per Fletcher-32 thread: even, so every segment starts on a word
_THREADS = 256
_BLOCK_BYTES = 16_384  # output bytes one block of the unshuffle covers per pass
MOD = 65535

FILTER_KERNELS = r"""
extern "C" __global__ void gdsz_fletcher32(
    const unsigned char* __restrict__ data, const long long* __restrict__ seg_chunk,
    const long long* __restrict__ seg_start, const long long* __restrict__ seg_len,
    const long long* __restrict__ seg_after, unsigned long long* __restrict__ sums,
    const long long nseg)
{
    // sums[2c]: the exact sum S of chunk c's words; sums[2c + 1]: its T, modulo 65535.
    const long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= nseg) return;
    const unsigned char* p = data + seg_start[g];
    const long long n = seg_len[g];
    const long long words = (n + 1) >> 1;
    unsigned long long s = 0, t = 0;
    for (long long j = 0; j < words; ++j) {
        const unsigned long long lo = (2 * j + 1 < n) ? p[2 * j + 1] : 0;
        const unsigned long long w = ((unsigned long long)p[2 * j] << 8) | lo;
        s += w;
        t += (unsigned long long)(words - j) * w;  // < 2^11 * 2^16 per word: no overflow
    }
    const unsigned long long after = (unsigned long long)((seg_after[g] + 1) >> 1);
    t = (t % 65535ull + (after % 65535ull) * (s % 65535ull)) % 65535ull;
    atomicAdd(sums + 2 * seg_chunk[g], s);
    atomicAdd(sums + 2 * seg_chunk[g] + 1, t);
}

extern "C" __global__ void gdsz_unshuffle(
    const unsigned char* __restrict__ src, const long long* __restrict__ src_off,
    unsigned char* __restrict__ dst, const long long* __restrict__ dst_off,
    const long long nbytes, const long long elementsize)
{
    // Chunk blockIdx.x, spread over gridDim.y blocks: output byte q is byte b of item i,
    // stored at b * m + i (m = nbytes / elementsize items; the size is a multiple of it).
    const unsigned char* s = src + src_off[blockIdx.x];
    unsigned char* d = dst + dst_off[blockIdx.x];
    const long long m = nbytes / elementsize;
    const long long step = (long long)gridDim.y * blockDim.x;
    for (long long q = (long long)blockIdx.y * blockDim.x + threadIdx.x; q < nbytes;
         q += step) {
        const long long i = q / elementsize, b = q - i * elementsize;
        d[q] = s[b * m + i];
    }
}
"""


@functools.cache
def _kernel(name: str) -> Any:
    import cupy

    return cupy.RawKernel(FILTER_KERNELS, name)


def _dev(a: np.ndarray) -> Any:
    import cupy

    return cupy.asarray(np.ascontiguousarray(a, dtype=np.int64))


def fletcher32_segments(starts: np.ndarray, stops: np.ndarray, seg_bytes: int = _SEGMENT
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The kernel's segments (:func:`gds_zarr.decode.formats.segment_table`, with an even
    ``seg_bytes`` so every segment but a chunk's last holds whole words)."""
    if seg_bytes % 2:
        raise ValueError(f"Fletcher-32 segments must hold whole words, got {seg_bytes} bytes")
    return formats.segment_table(starts, stops, seg_bytes)


def fold_fletcher32(exact_sum: np.ndarray, weighted: np.ndarray) -> np.ndarray:
    """HDF5's Fletcher-32 of every chunk from its words' exact sum and its weighted sum modulo
    65535 (the kernel's two counters): uint32 per chunk."""
    s = np.asarray(exact_sum, np.uint64)
    t = np.asarray(weighted, np.uint64) % np.uint64(MOD)
    s1 = s % np.uint64(MOD)
    nonzero = s > 0
    s1 = np.where(nonzero & (s1 == 0), np.uint64(MOD), s1)
    s2 = np.where(nonzero & (t == 0), np.uint64(MOD), np.where(nonzero, t, np.uint64(0)))
    return ((s2 << np.uint64(16)) | s1).astype(np.uint32)


def device_fletcher32(data: Any, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """HDF5's Fletcher-32 of every ``data[starts:stops]`` on the device (uint32 per chunk,
    copied to the host: 16 bytes a chunk)."""
    import cupy

    sums = cupy.zeros(2 * len(starts), cupy.uint64)
    chunk, start, length, after = fletcher32_segments(starts, stops)
    if len(chunk):
        _kernel("gdsz_fletcher32")((max(1, -(-len(chunk) // _THREADS)),), (_THREADS,), (
            data, _dev(chunk), _dev(start), _dev(length), _dev(after), sums,
            np.int64(len(chunk))))
    s, t = cupy.asnumpy(sums).reshape(-1, 2).T
    return fold_fletcher32(s, t)


def check_fletcher32(data: Any, reader: formats.ByteReader, starts: np.ndarray,
                     stops: np.ndarray, rows: np.ndarray, keys: Sequence[str],
                     name: str) -> tuple[np.ndarray, np.ndarray]:
    """Verify and strip the Fletcher-32 trailer of chunks ``rows`` (the others are untouched).

    Returns
    -------
    tuple of numpy.ndarray
        The new ``stops`` (4 bytes shorter for ``rows``), and a bool per chunk: too short for a
        trailer (left to the CPU decoder, whose numcodecs says what is wrong).

    Raises
    ------
    ChunkDecodeError
        A stored checksum that does not match, naming the key.
    """
    short = np.zeros(len(starts), bool)
    short[rows] = (stops[rows] - starts[rows]) < 4
    rows = rows[~short[rows]]
    stops = stops.copy()
    if len(rows):
        stored = reader(stops[rows] - 4, 4).astype(np.uint32)
        trailer = stored[:, 0] | (stored[:, 1] << 8) | (stored[:, 2] << 16) | (stored[:, 3] << 24)
        computed = device_fletcher32(data, starts[rows], stops[rows] - 4)
        formats.raise_checksum_mismatch(computed, trailer, [keys[int(r)] for r in rows], name,
                                        "Fletcher-32")
        stops[rows] -= 4
    return stops, short


def unshuffle_grid(nrows: int, nbytes: int) -> tuple[int, int]:
    """The unshuffle's grid: a column of blocks per chunk, as many rows as its size needs."""
    return nrows, min(65_535, max(1, -(-nbytes // _BLOCK_BYTES)))


def unshuffle(src: Any, src_starts: np.ndarray, dst: Any, dst_offsets: np.ndarray,
              nbytes: int, elementsize: int) -> None:
    """Undo the byte shuffle of chunks of ``nbytes`` bytes: ``src[src_starts[j]:]`` into
    ``dst[dst_offsets[j]:]`` (device buffers that do not overlap), one launch."""
    if len(src_starts) == 0:
        return
    if nbytes % elementsize:
        raise ChunkDecodeError("", "numcodecs.shuffle",
                               f"{nbytes} bytes are not a multiple of the element size "
                               f"{elementsize}")
    _kernel("gdsz_unshuffle")(unshuffle_grid(len(src_starts), nbytes), (_THREADS,), (
        src, _dev(src_starts), dst, _dev(dst_offsets), np.int64(nbytes), np.int64(elementsize)))
