"""GPU decoder: nvCOMP batched decode of one device buffer, with checks before and after.

For a batch of chunks that share a codec chain (``crc32c`` and at most one of ``zstd``,
``gzip``, ``zlib``, ``lz4``, in decode order), :class:`NvcompDecoder`:

1. checks every chunk's header with :mod:`gds_zarr.decode.formats`, reading only the few bytes it
   needs from the device (one gather per check);
2. verifies ``crc32c`` trailers with a CuPy kernel (one thread per 4 KiB segment, the segments'
   CRCs combined per chunk in GF(2): see ``formats.crc_segments_reference``);
3. decodes all chunks in ONE ``Codec.decode`` call: ``nvcomp.as_arrays(buffer, offsets, sizes)``
   carves the inputs out of one device buffer (re-packed at the codec's alignment by a gather
   kernel when the read offsets are not aligned), and ``out=`` carves one preallocated CuPy
   staging buffer, one fixed-size slot per chunk;
4. checks every decoded size (``BatchArray.buffer_sizes``) and, where the format carries one,
   the checksum of the decoded bytes (gzip: CRC-32; zlib: Adler-32) with the same kernels.

Chunks whose valid input nvCOMP should not be given (a zstd frame without a content size, a
skippable frame, an over-long gzip header field) and chains it cannot decode at all (blosc, other
numcodecs codecs) are decoded on the host by :class:`~gds_zarr.decode._cpu.CpuDecoder` and copied
to the device. If nvCOMP raises for a batch, the batch is decoded on the host instead, so the
answer is the CPU's (the data, or a :class:`~gds_zarr.errors.ChunkDecodeError` naming the key).
What this cannot detect is written down in ``docs/gpu_decode.md``.

CuPy and nvCOMP are imported lazily: importing this module needs neither.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from gds_zarr._batch import BatchRead
from gds_zarr._counters import Counters
from gds_zarr.decode import formats
from gds_zarr.decode._base import BytesStep
from gds_zarr.errors import ChunkDecodeError

__all__ = ["GPUDecodeStats", "NvcompDecoder", "gpu_decode_stats"]

log = logging.getLogger(__name__)



@dataclass
class GPUDecodeStats(Counters):
    """Process-wide counters of what the GPU decoder did (thread safe), for tests and info.

    Attributes
    ----------
    nvcomp_calls, nvcomp_chunks
        ``Codec.decode`` batch calls made, and chunks they decoded.
    device_chunks
        Chunks that :meth:`NvcompDecoder.decode_batch` finished on the device (nvCOMP, crc32c
        only, or raw bytes).
    cpu_chunks
        Chunks it decoded on the host instead (chains nvCOMP cannot run, inputs it must not be
        given, or a batch nvCOMP refused).
    nvcomp_failures
        Batches nvCOMP raised for (each then decoded on the host).
    """

    nvcomp_calls: int = 0
    nvcomp_chunks: int = 0
    device_chunks: int = 0
    cpu_chunks: int = 0
    nvcomp_failures: int = 0


gpu_decode_stats = GPUDecodeStats()

_GPU_KINDS = frozenset({"zstd", "gzip", "zlib", "lz4", "crc32c"})
_COMPRESSORS = {"zstd": "Zstd", "gzip": "Gzip", "zlib": "Deflate", "lz4": "LZ4"}
_CHECKS = {"zstd": formats.check_zstd, "gzip": formats.check_gzip, "zlib": formats.check_zlib,
           "lz4": formats.check_lz4}
_SEGMENT = 4096   # bytes per checksum thread
_THREADS = 256
_ALIGN = 16       # used when nvCOMP does not say (its documented safe choice)

_KERNELS = r"""
__device__ __forceinline__ unsigned int gdsz_mulmod(unsigned int a, unsigned int b,
                                                    const unsigned int poly) {
    // a * b mod P in reflected bit order (zlib's multmodp), a bounded loop of 32 steps.
    unsigned int m = 1u << 31, p = 0;
    for (int i = 0; i < 32; ++i) {
        if (a & m) p ^= b;
        m >>= 1;
        b = (b & 1u) ? ((b >> 1) ^ poly) : (b >> 1);
    }
    return p;
}

extern "C" __global__ void gdsz_crc32(
    const unsigned char* __restrict__ data, const long long* __restrict__ seg_chunk,
    const long long* __restrict__ seg_start, const long long* __restrict__ seg_len,
    const long long* __restrict__ seg_after, const unsigned int* __restrict__ table,
    const unsigned int* __restrict__ shifts, const unsigned int poly,
    unsigned int* __restrict__ out, const long long nseg)
{
    __shared__ unsigned int t[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) t[i] = table[i];
    __syncthreads();
    const long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= nseg) return;
    const unsigned char* p = data + seg_start[g];
    const long long n = seg_len[g];
    unsigned int crc = 0xFFFFFFFFu;
    for (long long i = 0; i < n; ++i) crc = t[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
    crc ^= 0xFFFFFFFFu;
    // crc(A + B) = shift(crc(A), len(B)) ^ crc(B): shift this segment past the bytes after it.
    unsigned long long after = (unsigned long long)seg_after[g];
    for (int k = 0; after != 0 && k < 64; ++k, after >>= 1)
        if (after & 1ull) crc = gdsz_mulmod(shifts[k], crc, poly);
    atomicXor(out + seg_chunk[g], crc);
}

extern "C" __global__ void gdsz_adler32(
    const unsigned char* __restrict__ data, const long long* __restrict__ seg_chunk,
    const long long* __restrict__ seg_start, const long long* __restrict__ seg_len,
    const long long* __restrict__ seg_after, unsigned long long* __restrict__ sums,
    const long long nseg)
{
    // A = 1 + sum d_i, B = L + sum (L - i) d_i (mod 65521): both split over segments.
    const long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= nseg) return;
    const unsigned char* p = data + seg_start[g];
    const long long n = seg_len[g];
    unsigned long long s = 0, t = 0;
    unsigned long long w = (unsigned long long)((seg_after[g] + n) % 65521);
    for (long long i = 0; i < n; ++i) {
        s += p[i];
        t += w * p[i];
        w = (w == 0) ? 65520 : w - 1;
    }
    atomicAdd(sums + 2 * seg_chunk[g], s % 65521);
    atomicAdd(sums + 2 * seg_chunk[g] + 1, t % 65521);
}

extern "C" __global__ void gdsz_gather(
    const unsigned char* __restrict__ src, const long long* __restrict__ src_off,
    unsigned char* __restrict__ dst, const long long* __restrict__ dst_off,
    const long long* __restrict__ size)
{
    // One block per entry: copy size[j] bytes from src + src_off[j] to dst + dst_off[j].
    const long long j = blockIdx.x;
    const unsigned char* s = src + src_off[j];
    unsigned char* d = dst + dst_off[j];
    for (long long i = threadIdx.x; i < size[j]; i += blockDim.x) d[i] = s[i];
}
"""


@functools.cache
def _kernel(name: str) -> Any:
    import cupy

    return cupy.RawKernel(_KERNELS, name)


@functools.cache
def _crc_tables(poly: int) -> tuple[Any, Any]:
    import cupy

    return cupy.asarray(formats.crc_table(poly)), cupy.asarray(formats.crc_shift_table(poly))


def _dev(a: np.ndarray) -> Any:
    import cupy

    return cupy.asarray(np.ascontiguousarray(a, dtype=np.int64))


def _grid(n: int) -> tuple[int]:
    return (max(1, -(-n // _THREADS)),)


def _device_reader(data: Any) -> formats.ByteReader:
    """A :data:`formats.ByteReader` over a device buffer: gathers there, copies few bytes back."""
    import cupy

    last = int(data.size) - 1

    def read(positions: np.ndarray, width: int) -> np.ndarray:
        if last < 0 or len(positions) == 0:
            return np.zeros((len(positions), width), np.uint8)
        idx = np.asarray(positions, np.int64)[:, None] + np.arange(width, dtype=np.int64)
        out = cupy.asnumpy(data[cupy.asarray(np.clip(idx, 0, last))])
        out[(idx < 0) | (idx > last)] = 0
        return out

    return read


def device_crc32(data: Any, starts: np.ndarray, stops: np.ndarray, poly: int) -> np.ndarray:
    """CRC-32 (``poly``: CRC32C_POLY or CRC32_POLY) of every ``data[starts:stops]`` on the device.

    Returns
    -------
    numpy.ndarray
        uint32 per chunk (copied to the host: 4 bytes a chunk).
    """
    import cupy

    out = cupy.zeros(len(starts), cupy.uint32)
    chunk, start, length, after = formats.segment_table(starts, stops, _SEGMENT)
    if len(chunk):
        table, shifts = _crc_tables(poly)
        _kernel("gdsz_crc32")(_grid(len(chunk)), (_THREADS,), (
            data, _dev(chunk), _dev(start), _dev(length), _dev(after), table, shifts,
            np.uint32(poly), out, np.int64(len(chunk))))
    return cupy.asnumpy(out)


def device_adler32(data: Any, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Adler-32 of every ``data[starts:stops]`` on the device (uint32 per chunk, on the host)."""
    import cupy

    sums = cupy.zeros(2 * len(starts), cupy.uint64)
    chunk, start, length, after = formats.segment_table(starts, stops, _SEGMENT)
    if len(chunk):
        _kernel("gdsz_adler32")(_grid(len(chunk)), (_THREADS,), (
            data, _dev(chunk), _dev(start), _dev(length), _dev(after), sums,
            np.int64(len(chunk))))
    s, t = cupy.asnumpy(sums).reshape(-1, 2).T
    n = (np.asarray(stops, np.int64) - np.asarray(starts, np.int64)).astype(np.uint64)
    a = (1 + s) % np.uint64(formats.ADLER_MOD)
    b = (n % np.uint64(formats.ADLER_MOD) + t) % np.uint64(formats.ADLER_MOD)
    return ((b << np.uint64(16)) | a).astype(np.uint32)


def _gather(data: Any, starts: np.ndarray, sizes: np.ndarray, dst: Any,
            dst_offsets: np.ndarray) -> None:
    """Copy ``data[starts[j]:starts[j]+sizes[j]]`` to ``dst[dst_offsets[j]:]``, one launch."""
    if len(starts):
        _kernel("gdsz_gather")((len(starts),), (_THREADS,), (
            data, _dev(starts), dst, _dev(dst_offsets), _dev(sizes)))


class NvcompDecoder:
    """Decode batches of chunks on the GPU with nvCOMP (see the module docstring).

    Parameters
    ----------
    cpu
        The host decoder for fallbacks (default: a new ``CpuDecoder``).
    """

    device: Literal["cpu", "gpu"] = "gpu"

    def __init__(self, cpu: Any = None) -> None:
        if cpu is None:
            from gds_zarr.decode._cpu import CpuDecoder

            cpu = CpuDecoder()
        self._cpu = cpu
        self._local = threading.local()  # nvcomp.Codec objects are per thread

    def supports(self, steps: Sequence[BytesStep]) -> bool:
        """True when every step runs on the GPU: crc32c steps and at most one compressor."""
        kinds = [s.kind for s in steps]
        return all(k in _GPU_KINDS for k in kinds) and sum(k in _COMPRESSORS for k in kinds) <= 1

    def _codec(self, algorithm: str) -> Any:
        """One ``nvcomp.Codec`` per (algorithm, device, stream) and thread, created once."""
        import cupy
        from nvidia import nvcomp

        stream = cupy.cuda.get_current_stream()
        key = (algorithm, cupy.cuda.Device().id, stream.ptr)
        cache: dict[tuple[str, int, int], Any] = self._local.__dict__.setdefault("codecs", {})
        if key not in cache:
            # RAW: the bytes CPU libraries wrote (the default, NVCOMP_NATIVE, adds a header).
            cache[key] = nvcomp.Codec(algorithm=algorithm, device_id=key[1], cuda_stream=key[2],
                                      bitstream_kind=nvcomp.BitstreamKind.RAW)
        return cache[key]

    def decode_batch(self, steps: Sequence[BytesStep], src: BatchRead, index: np.ndarray,
                     decoded_nbytes: int, keys: Sequence[str]) -> Any:
        """Decode chunks ``index`` of ``src`` into a ``(len(index), decoded_nbytes)`` CuPy array.

        Parameters
        ----------
        steps
            Bytes -> bytes steps in decode order (may be empty: raw bytes).
        src
            The batch read holding the encoded chunks (device or host memory).
        index
            Which requests of ``src`` to decode, in output row order.
        decoded_nbytes
            Size of every decoded chunk.
        keys
            Store key of every request of ``src``.

        Returns
        -------
        cupy.ndarray
            uint8, C-contiguous, one row per chunk.

        Raises
        ------
        ChunkDecodeError
            A chunk that fails a check or a codec, naming its key.
        """
        import cupy

        index = np.asarray(index, np.int64)
        n = len(index)
        if n == 0:
            return cupy.empty((0, decoded_nbytes), cupy.uint8)
        data = cupy.asarray(src.data).reshape(-1).view(cupy.uint8)
        starts = np.asarray(src.offsets, np.int64)[index]
        stops = starts + np.asarray(src.sizes, np.int64)[index]
        row_keys = [keys[int(i)] for i in index]
        if not self.supports(steps):
            names = ", ".join(s.name for s in steps)
            log.debug("decoding %d chunks on the CPU: chain [%s] is not all-GPU", n, names)
            gpu_decode_stats.add(cpu_chunks=n)
            return self._on_cpu(steps, data, starts, stops, decoded_nbytes, row_keys)
        try:
            out, cpu_rows = self._decode_gpu(steps, data, starts, stops, decoded_nbytes,
                                             row_keys)
        except _NvcompFailed:
            gpu_decode_stats.add(cpu_chunks=n)
            return self._on_cpu(steps, data, starts, stops, decoded_nbytes, row_keys)
        gpu_decode_stats.add(device_chunks=int(n - cpu_rows.sum()), cpu_chunks=int(cpu_rows.sum()))
        if cpu_rows.any():
            rows = np.flatnonzero(cpu_rows)
            log.debug("decoding %d of %d chunks on the CPU (valid input nvCOMP is not given)",
                      len(rows), n)
            out[cupy.asarray(rows)] = self._on_cpu(steps, data, starts[rows], stops[rows],
                                                   decoded_nbytes, [row_keys[r] for r in rows])
        return out

    def _on_cpu(self, steps: Sequence[BytesStep], data: Any, starts: np.ndarray,
                stops: np.ndarray, decoded_nbytes: int, keys: Sequence[str]) -> Any:
        """Decode the chunks on the host with the CPU decoder, then copy the rows to the device."""
        import cupy

        sizes = stops - starts
        offsets = np.cumsum(sizes) - sizes
        packed = cupy.empty(int(sizes.sum()), cupy.uint8)
        _gather(data, starts, sizes, packed, offsets)
        host = BatchRead(data=cupy.asnumpy(packed), offsets=offsets, sizes=sizes,
                         present=np.ones(len(sizes), bool), device="cpu")
        rows = self._cpu.decode_batch(steps, host, np.arange(len(sizes)), decoded_nbytes,
                                      list(keys))
        return cupy.asarray(rows)

    def _decode_gpu(self, steps: Sequence[BytesStep], data: Any, starts: np.ndarray,
                    stops: np.ndarray, decoded_nbytes: int, keys: Sequence[str]
                    ) -> tuple[Any, np.ndarray]:
        """Run the steps on the device; return the rows and the rows left to the CPU."""
        import cupy

        n = len(starts)
        cpu_rows = np.zeros(n, bool)
        # The size each step must produce: crc32c steps later in the chain strip 4 bytes each.
        sizes_after = [decoded_nbytes + 4 * sum(s.kind == "crc32c" for s in steps[k + 1:])
                       for k in range(len(steps))]
        for k, step in enumerate(steps):
            reader = _device_reader(data)
            live = ~cpu_rows
            if step.kind == "crc32c":
                p = formats.check_crc32c_trailer(reader, starts, stops, keys)
                computed = device_crc32(data, p.starts[live], p.stops[live], formats.CRC32C_POLY)
                assert p.trailer is not None
                formats.raise_checksum_mismatch(computed, p.trailer[live],
                                                [keys[r] for r in np.flatnonzero(live)],
                                                step.name, "CRC-32C")
                stops = p.stops
                continue
            p = _CHECKS[step.kind](reader, starts, stops, sizes_after[k], keys)
            cpu_rows |= p.cpu_only
            data, starts, stops = self._nvcomp(step, data, p, ~cpu_rows, sizes_after[k], keys)
        # Rows out of the last step (or the raw payloads): sizes must be exact.
        got = stops - starts
        bad = ~cpu_rows & (got != decoded_nbytes)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ChunkDecodeError(keys[j], steps[-1].name if steps else "bytes",
                                   f"expected {decoded_nbytes} bytes, found {int(got[j])}")
        out = cupy.empty((n, decoded_nbytes), cupy.uint8)
        live = np.flatnonzero(~cpu_rows)
        _gather(data, starts[live], got[live], out, live * decoded_nbytes)
        return out, cpu_rows

    def _nvcomp(self, step: BytesStep, data: Any, p: formats.Payload, live: np.ndarray,
                expected: int, keys: Sequence[str]) -> tuple[Any, np.ndarray, np.ndarray]:
        """Decode payloads ``p`` of the ``live`` rows in one nvCOMP call into a staging buffer.

        Returns the staging buffer with each row's start and stop there.

        Raises
        ------
        ChunkDecodeError
            A decoded size or checksum that does not match, naming the key.
        _NvcompFailed
            nvCOMP raised for the batch (the caller decodes it on the CPU).
        """
        import cupy
        from nvidia import nvcomp

        codec = self._codec(_COMPRESSORS[step.kind])
        try:
            align = int(codec.get_required_decompression_alignment()) or _ALIGN
        except Exception:  # noqa: BLE001 - an nvCOMP without the query: its documented safe value
            align = _ALIGN
        rows = np.flatnonzero(live)
        n = len(p.starts)
        stride = -(-expected // align) * align  # every output slot starts aligned
        staging = cupy.empty(max(1, n * stride), cupy.uint8)
        out_starts = np.arange(n, dtype=np.int64) * stride
        if len(rows) == 0:
            return staging, out_starts, out_starts
        src, src_starts = data, p.starts[rows]
        sizes = p.stops[rows] - p.starts[rows]
        if ((data.data.ptr + src_starts) % align).any():
            # BatchRead offsets follow the files; nvCOMP wants aligned entries: re-pack them.
            padded = -(-sizes // align) * align
            src_starts = np.cumsum(padded) - padded
            src = cupy.empty(int(padded.sum()), cupy.uint8)
            _gather(data, p.starts[rows], sizes, src, src_starts)
        stream = cupy.cuda.get_current_stream().ptr
        try:
            result = codec.decode(
                nvcomp.as_arrays(src, src_starts.tolist(), sizes.tolist(), cuda_stream=stream),
                out=nvcomp.as_arrays(staging, out_starts[rows].tolist(),
                                     [expected] * len(rows), cuda_stream=stream))
            decoded = np.asarray(result.buffer_sizes, np.int64)  # waits for the decode
        except Exception as e:  # nvCOMP refused the batch (limits, formats it rejects)
            gpu_decode_stats.add(nvcomp_failures=1)
            log.warning("nvCOMP %s failed on a batch of %d chunks (%s: %s); decoding it on the "
                        "CPU", step.name, len(rows), type(e).__name__, e)
            raise _NvcompFailed from e
        gpu_decode_stats.add(nvcomp_calls=1, nvcomp_chunks=len(rows))
        bad = decoded != expected
        if bad.any():
            j = int(rows[np.flatnonzero(bad)[0]])
            raise ChunkDecodeError(keys[j], step.name, f"decoded to {int(decoded[bad][0])} "
                                                       f"bytes, expected {expected}")
        out_stops = out_starts + expected
        if p.trailer is not None and step.kind in ("gzip", "zlib"):
            computed = (device_crc32(staging, out_starts[rows], out_stops[rows],
                                     formats.CRC32_POLY) if step.kind == "gzip"
                        else device_adler32(staging, out_starts[rows], out_stops[rows]))
            formats.raise_checksum_mismatch(
                computed, p.trailer[rows], [keys[int(r)] for r in rows], step.name,
                "CRC-32" if step.kind == "gzip" else "Adler-32")
        return staging, out_starts, out_stops


class _NvcompFailed(Exception):
    """nvCOMP raised for a whole batch; the batch goes to the CPU decoder."""

