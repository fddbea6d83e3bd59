"""GPU decoder: nvCOMP batched decode of one device buffer, with checks before and after.

For a batch of chunks that share a codec chain (``crc32c`` or HDF5's ``fletcher32``, at most
one of ``zstd``, ``gzip``, ``zlib``, ``lz4``, then optionally HDF5's byte ``shuffle``, in decode
order), :class:`NvcompDecoder`:

1. checks every chunk's header with :mod:`gds_zarr.decode.formats`, reading only the few bytes it
   needs from the device (one gather per check);
2. verifies ``crc32c`` trailers with a CuPy kernel (one thread per 4 KiB segment, the segments'
   CRCs combined per chunk in GF(2): see ``formats.crc_segments_reference``);
3. decodes all chunks in ONE ``Codec.decode`` call: ``nvcomp.as_arrays(buffer, offsets, sizes)``
   carves the inputs out of one device buffer, where they were read when every entry is aligned
   (:mod:`gds_zarr.planning.staging` lays reads out so), else from one packed copy; ``out=``
   carves one preallocated CuPy staging buffer, one fixed-size slot per chunk, which is the
   returned rows themselves when the decoded size is a multiple of the alignment. LZ4, Deflate
   and Gzip get a decompression config built from the known decoded sizes, so nvCOMP does not
   walk every stream once to size it;
4. checks every decoded size (``BatchArray.buffer_sizes``) and, where the format carries one,
   the checksum of the decoded bytes (gzip: CRC-32; zlib: Adler-32) with the same kernels;
5. verifies Fletcher-32 trailers before the decode and undoes a byte shuffle after it, one
   kernel launch each (:mod:`gds_zarr.decode._filters_gpu`).

Chunks whose valid input nvCOMP should not be given (a zstd frame without a content size, a
skippable frame, an over-long gzip header field) and chains it cannot decode at all (blosc, other
numcodecs codecs) are decoded on the host by :class:`~gds_zarr.decode._cpu.CpuDecoder` and copied
to the device.

Failures of nvCOMP itself are sorted (:func:`classify_failure`): an expected *refusal* (a size
or batch limit, a feature it does not support, a full device) sends those chunks to the CPU,
counted in :data:`gpu_decode_stats` and logged once per read; a *sticky CUDA error* (an illegal
address and the like: the context is dead) raises :class:`~gds_zarr.errors.CUDAContextError`
once and every later batch on that device raises it again at once, without launching anything;
anything else raises :class:`~gds_zarr.errors.GPUDecodeError` naming the batch's first key.
Building the ``nvcomp.Codec`` follows the same rules. What the GPU cannot detect is written
down in ``docs/gpu_decode.md``.

Everything runs on the CuPy device and stream current in the calling thread: codecs are kept
per (algorithm, device, stream) and thread, checksum tables per device. nvCOMP's scratch memory
comes from CuPy's pool (``nvcomp.set_device_allocator``), so CuPy can free cached blocks for it.

CuPy and nvCOMP are imported lazily: importing this module needs neither.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from gds_zarr._batch import BatchRead
from gds_zarr._counters import Counters
from gds_zarr._device import CudaTarget, on_cuda_target
from gds_zarr._hostpool import host_empty
from gds_zarr.decode import _filters_gpu, formats
from gds_zarr.decode._base import BytesStep
from gds_zarr.errors import ChunkDecodeError, CUDAContextError, GDSZarrError, GPUDecodeError
from gds_zarr.planning import staging

__all__ = ["GPUDecodeStats", "NvcompDecoder", "classify_failure", "device_decoder",
           "gpu_decode_stats"]

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        nvCOMP calls that refused their batch (its chunks then decoded on the host).
    refused_chunks
        Chunks those refusals sent to the host (also counted in ``cpu_chunks``).
    repacked_chunks, repacked_bytes
        Decode inputs copied into an aligned buffer first (not aligned where they were read).
    rows_in_place
        nvCOMP calls whose output slots were the returned rows (no copy after the decode).
    """

    nvcomp_calls: int = 0
    nvcomp_chunks: int = 0
    device_chunks: int = 0
    cpu_chunks: int = 0
    nvcomp_failures: int = 0
    refused_chunks: int = 0
    repacked_chunks: int = 0
    repacked_bytes: int = 0
    rows_in_place: int = 0


gpu_decode_stats = GPUDecodeStats()

_GPU_KINDS = frozenset({"zstd", "gzip", "zlib", "lz4", "crc32c", "fletcher32", "shuffle"})
# Checksum trailers a step verifies and strips (4 bytes each).
_TRAILERS = frozenset({"crc32c", "fletcher32"})
_COMPRESSORS = {"zstd": "Zstd", "gzip": "Gzip", "zlib": "Deflate", "lz4": "LZ4"}
_CHECKS = {"zstd": formats.check_zstd, "gzip": formats.check_gzip, "zlib": formats.check_zlib,
           "lz4": formats.check_lz4}
_SEGMENT = 4096   # bytes per checksum thread
_THREADS = 256
# nvCOMP walks every RAW LZ4 / Deflate / Gzip stream once to size it unless told the sizes.
_KNOWN_SIZE_CONFIG = frozenset({"LZ4", "Deflate", "Gzip"})

# CUDA errors after which the context is unusable for the rest of the process (CUDA runtime
# API, cudaError_t): every later call on the device returns the same error.
_STICKY_CUDA = {
    214: "cudaErrorECCUncorrectable", 700: "cudaErrorIllegalAddress",
    702: "cudaErrorLaunchTimeout", 710: "cudaErrorAssert", 714: "cudaErrorHardwareStackError",
    715: "cudaErrorIllegalInstruction", 716: "cudaErrorMisalignedAddress",
    717: "cudaErrorInvalidAddressSpace", 718: "cudaErrorInvalidPc", 719: "cudaErrorLaunchFailure",
}
_CODE = re.compile(r"\bcode=(\d+)")
# The same errors as their messages (cudaGetErrorString), for exceptions that carry only text
# (nvCOMP: "Encountered Cuda Error from previous asynchronous launches: <message>").
_STICKY_TEXT = (
    *_STICKY_CUDA.values(), "an illegal memory access was encountered",
    "an illegal instruction was encountered", "misaligned address",
    "unspecified launch failure", "device-side assert triggered",
    "the launch timed out and was terminated", "uncorrectable ecc error",
    "hardware stack error", "invalid program counter",
)
# nvCOMP's refusals of valid input, by message (libnvcomp 6.0 strings): limits on chunk and
# batch sizes, unsupported features, output slots too small. They send chunks to the CPU.
_REFUSAL_TEXT = (
    "must not exceed", "exceeds the maximum", "maximum chunk size", "maximum allowed",
    "too large", "too small to hold", "not supported", "out of memory",
)

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
    // Entry blockIdx.x, spread over gridDim.y blocks: copy size[j] bytes from src + src_off[j]
    // to dst + dst_off[j] a 4-byte word per thread and step. The bytes up to dst's next word
    // boundary go one by one; then every store is an aligned word, built from the two aligned
    // source words it straddles (a funnel shift, in plain shifts: no intrinsic to depend on),
    // so the loads are words at any source offset. Those two words may hold bytes just outside
    // the entry, never outside its 4-byte-aligned words (inside the allocation: CUDA
    // allocations are whole granules).
    const long long j = blockIdx.x;
    const unsigned char* s = src + src_off[j];
    unsigned char* d = dst + dst_off[j];
    long long n = size[j];
    const long long first = (long long)blockIdx.y * blockDim.x + threadIdx.x;
    const long long step = (long long)gridDim.y * blockDim.x;
    long long head = (long long)((4u - (unsigned int)((unsigned long long)d & 3u)) & 3u);
    if (head > n) head = n;
    for (long long i = first; i < head; i += step) d[i] = s[i];
    s += head;
    d += head;
    n -= head;
    const long long words = n >> 2;
    const unsigned int shift = (unsigned int)((unsigned long long)s & 3u);
    const unsigned int* sw = (const unsigned int*)(s - shift);
    unsigned int* dw = (unsigned int*)d;
    if (shift == 0) {
        for (long long w = first; w < words; w += step) dw[w] = sw[w];
    } else {
        const unsigned int right = 8u * shift, left = 32u - right;  // 8..24: both defined
        for (long long w = first; w < words; w += step)
            dw[w] = (sw[w] >> right) | (sw[w + 1] << left);
    }
    for (long long i = (words << 2) + first; i < n; i += step) d[i] = s[i];
}
"""


@functools.cache
def _kernel(name: str) -> Any:
    import cupy

    return cupy.RawKernel(_KERNELS, name)


def _crc_tables(poly: int) -> tuple[Any, Any]:
    """The CRC lookup and shift tables of ``poly`` on the current device."""
    import cupy

    return _crc_tables_on(poly, cupy.cuda.Device().id)


@functools.cache
def _crc_tables_on(poly: int, device: int) -> tuple[Any, Any]:
    import cupy

    with cupy.cuda.Device(device):
        return cupy.asarray(formats.crc_table(poly)), cupy.asarray(formats.crc_shift_table(poly))


Failure = Literal["refused", "sticky", "error"]


def device_decoder(kinds: Sequence[str]) -> str | None:
    """What decodes a chain of step kinds (decode order) on the device, in words; None when
    :class:`NvcompDecoder` hands the chain to the host. The one rule ``supports`` and
    ``gds-zarr info`` both read."""
    kinds = list(kinds)
    if kinds == ["blosc"]:  # decode/_blosc_gpu.py
        from gds_zarr.decode._blosc_gpu import NVCOMP_CODECS

        return f"nvCOMP {'/'.join(sorted(set(NVCOMP_CODECS.values())))} + unshuffle kernel"
    compressors = [k for k in kinds if k in _COMPRESSORS]
    if not all(k in _GPU_KINDS for k in kinds) or len(compressors) > 1:
        return None
    if "shuffle" in kinds[:-1]:  # HDF5's unshuffle comes last, after the decompression
        return None
    hdf5 = [w for k, w in (("fletcher32", "Fletcher-32 kernel"), ("shuffle", "unshuffle kernel"))
            if k in kinds]
    if compressors:
        return " + ".join([f"nvCOMP {_COMPRESSORS[compressors[0]]}", *hdf5])
    crc = ["CRC-32C kernel"] if "crc32c" in kinds or not hdf5 else []
    return " + ".join(crc + hdf5)


def _chain(e: BaseException) -> list[BaseException]:
    """``e`` and the exceptions it was raised from or during (cycles cut)."""
    seen: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and all(cur is not x for x in seen):
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _text(e: BaseException) -> str:
    """``str(e)``, which for some CUDA errors calls into the driver and may itself fail."""
    try:
        return str(e)
    except Exception:  # noqa: BLE001 - a message is only a hint here
        return type(e).__name__


def sticky_reason(e: BaseException) -> str | None:
    """The sticky CUDA error ``e`` reports (by CuPy's ``status`` or by its text), else None."""
    for x in _chain(e):
        status = getattr(x, "status", None)
        if not isinstance(status, int):
            # nvCOMP's text: "CUDA Runtime API failure: <cudaGetErrorString> : code=<n>".
            m = _CODE.search(_text(x))
            status = int(m.group(1)) if m else None
        if status in _STICKY_CUDA:
            return f"{_STICKY_CUDA[status]} ({type(x).__name__}: {_text(x)})"
        text = _text(x).lower()
        if any(t.lower() in text for t in _STICKY_TEXT):
            return f"{type(x).__name__}: {_text(x)}"
    return None


def classify_failure(e: BaseException) -> Failure:
    """Sort an exception raised by nvCOMP (or by building its codec).

    Returns
    -------
    {"refused", "sticky", "error"}
        ``"sticky"``: a CUDA error that leaves the context unusable; ``"refused"``: nvCOMP
        declined valid work (a size or batch limit, an unsupported feature, no memory left), so
        the chunks go to the CPU; ``"error"``: anything else (wrong call, broken install).
    """
    if sticky_reason(e) is not None:
        return "sticky"
    if isinstance(e, MemoryError):  # CuPy's OutOfMemoryError too
        return "refused"
    if isinstance(e, ValueError | RuntimeError) and not isinstance(e, GDSZarrError):
        text = _text(e).lower()
        if any(t in text for t in _REFUSAL_TEXT):
            return "refused"
    return "error"


def _probe_context() -> str | None:
    """None while the current device's context works, else the sticky error it now returns.

    Run after a failure: a fault inside nvCOMP may surface only at the next synchronization,
    so the stream is synchronized here rather than by the CPU fallback's first copy.
    """
    import cupy

    try:
        cupy.cuda.get_current_stream().synchronize()
    except Exception as e:  # noqa: BLE001 - CUDARuntimeError or nvCOMP's own: sorted below
        return sticky_reason(e)
    return None


_DEAD_LOCK = threading.Lock()
_DEAD: dict[int, str] = {}  # device id -> the sticky error that killed its context


def _mark_dead(device: int, reason: str, key: str) -> CUDAContextError:
    """Record that ``device``'s context is dead; log it once; the error to raise."""
    with _DEAD_LOCK:
        first = device not in _DEAD
        _DEAD.setdefault(device, reason)
        reason = _DEAD[device]
    if first:
        log.error("the CUDA context of device %d is no longer usable: %s (decoding the batch "
                  "starting at chunk %r); every later GPU read in this process will fail",
                  device, reason, key)
    return CUDAContextError(key, f"device {device}: {reason}")


def _device_for(src: BatchRead, target: CudaTarget | None) -> Any:
    """The ``cupy.cuda.Device`` a batch decodes on: the target's (the thread that asked for the
    read), else the one holding ``src``, else (a host ``src``) the current one."""
    import cupy

    if target is not None:
        return cupy.cuda.Device(target.device)
    if isinstance(src.data, cupy.ndarray):
        return src.data.device
    return cupy.cuda.Device()


def _check_alive(device: int, key: str) -> None:
    with _DEAD_LOCK:
        reason = _DEAD.get(device)
    if reason is not None:
        raise CUDAContextError(key, f"device {device}: {reason} (reported earlier in this process)")


_ALLOCATOR_LOCK = threading.Lock()
_ALLOCATOR_SET = False


def _cupy_allocation(nbytes: int, stream: Any) -> Any:
    """nvCOMP's device allocations from CuPy's pool (on the current device and stream).

    gds_zarr builds every codec on the calling thread's current CuPy stream and calls it from
    that thread, so the current stream is nvCOMP's ``stream``. CuPy's pool reuses a freed block
    only on the stream it was allocated on: a block nvCOMP frees is not handed out again before
    nvCOMP's work on that stream is done.
    """
    import cupy

    return cupy.cuda.alloc(int(nbytes))  # a MemoryPointer: ``.ptr``; freed when dropped


def _route_nvcomp_allocations() -> None:
    """Once per process: ``nvcomp.set_device_allocator`` to CuPy's pool (kept if refused)."""
    global _ALLOCATOR_SET
    with _ALLOCATOR_LOCK:
        if _ALLOCATOR_SET:
            return
        _ALLOCATOR_SET = True
        try:
            from nvidia import nvcomp

            nvcomp.set_device_allocator(_cupy_allocation)
        except Exception as e:  # noqa: BLE001 - nvCOMP keeps its own pool: slower, still right
            log.warning("nvCOMP's allocations stay in its own pool (set_device_allocator: "
                        "%s: %s)", type(e).__name__, e)


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


#: Bytes one block of the gather moves per pass (256 threads x 4-byte words x 16 steps).
_GATHER_BLOCK_BYTES = 16_384


def gather_grid(sizes: np.ndarray) -> tuple[int, int]:
    """The gather's grid: one column of blocks per entry, as many rows as the largest entry
    needs at :data:`_GATHER_BLOCK_BYTES` per block (CUDA allows 65535)."""
    largest = int(np.max(sizes, initial=0))
    return len(sizes), min(65_535, max(1, -(-largest // _GATHER_BLOCK_BYTES)))


def _gather(data: Any, starts: np.ndarray, sizes: np.ndarray, dst: Any,
            dst_offsets: np.ndarray) -> None:
    """Copy ``data[starts[j]:starts[j]+sizes[j]]`` to ``dst[dst_offsets[j]:]``, one launch."""
    if len(starts):
        _kernel("gdsz_gather")(gather_grid(sizes), (_THREADS,), (
            data, _dev(starts), dst, _dev(dst_offsets), _dev(sizes)))


def _nvcomp_codec(algorithm: str, device_id: int, cuda_stream: int) -> Any:
    """A RAW ``nvcomp.Codec``: the bytes CPU libraries wrote (NVCOMP_NATIVE adds a header)."""
    from nvidia import nvcomp

    return nvcomp.Codec(algorithm=algorithm, device_id=device_id, cuda_stream=cuda_stream,
                        bitstream_kind=nvcomp.BitstreamKind.RAW)


class _Refused(Exception):
    """nvCOMP refused a call (see :func:`classify_failure`); its chunks go to the CPU."""


class _LogOnce:
    """Remembers the last few reads a refusal was logged for, so each read logs once."""

    def __init__(self, size: int = 64) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[Any, None] = OrderedDict()
        self._size = size

    def first(self, token: Any) -> bool:
        with self._lock:
            if token in self._seen:
                return False
            self._seen[token] = None
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return True


class NvcompDecoder:
    """Decode batches of chunks on the GPU with nvCOMP (see the module docstring).

    Parameters
    ----------
    cpu
        The host decoder for fallbacks (default: a new ``CpuDecoder``).
    codec_factory
        ``codec_factory(algorithm, device_id, cuda_stream)`` returns an nvCOMP codec; default a
        RAW ``nvcomp.Codec``. Tests pass a failing stand-in to check how failures are sorted.
    probe
        Called after a failure: None while the CUDA context works, else the sticky error it
        returns now. Default: synchronize the current stream.
    """

    device: Literal["cpu", "gpu"] = "gpu"

    def __init__(self, cpu: Any = None, *,
                 codec_factory: Callable[[str, int, int], Any] | None = None,
                 probe: Callable[[], str | None] | None = None) -> None:
        if cpu is None:
            from gds_zarr.decode._cpu import CpuDecoder

            cpu = CpuDecoder()
        self._cpu = cpu
        self._codec_factory = codec_factory or _nvcomp_codec
        self._probe = probe or _probe_context
        self._local = threading.local()  # nvCOMP codecs are per thread
        self._logged = _LogOnce()

    def supports(self, steps: Sequence[BytesStep]) -> bool:
        """True when every step runs on the GPU: checksum steps (crc32c, fletcher32), at most
        one compressor and a last shuffle, or one Blosc step (see :func:`device_decoder`)."""
        return device_decoder([s.kind for s in steps]) is not None

    def _codec(self, algorithm: str, device: int, stream: int) -> Any:
        """One codec per (algorithm, device, stream) and thread, created once."""
        cache: dict[tuple[str, int, int], Any] = self._local.__dict__.setdefault("codecs", {})
        key = (algorithm, device, stream)
        if key not in cache:
            cache[key] = self._codec_factory(algorithm, device, stream)
        return cache[key]

    def _call_nvcomp(self, algorithm: str, device: int, stream: int, key: str,
                     call: Callable[[Any], T]) -> T:
        """``call(codec)`` with the codec for (algorithm, device, stream), failures sorted.

        Raises
        ------
        _Refused
            nvCOMP refused (building the codec or the call): the caller decodes on the CPU.
        CUDAContextError
            A sticky CUDA error, seen in the exception or by the probe afterwards.
        GPUDecodeError
            Anything else, naming ``key`` (the batch's first chunk), chained to the original.
        """
        _check_alive(device, key)
        try:
            return call(self._codec(algorithm, device, stream))
        except GDSZarrError:
            raise
        except Exception as e:  # sorted below; nothing is swallowed
            kind = classify_failure(e)
            reason = sticky_reason(e) if kind == "sticky" else self._probe()
            if reason is not None:  # a fault may surface only at the next synchronization
                raise _mark_dead(device, reason, key) from e
            if kind == "refused":
                raise _Refused(f"nvCOMP {algorithm} refused: {type(e).__name__}: {_text(e)}"
                               ) from e
            raise GPUDecodeError(key, f"nvCOMP {algorithm}: {type(e).__name__}: {_text(e)}") from e

    def decode_batch(self, steps: Sequence[BytesStep], src: BatchRead, index: np.ndarray,
                     decoded_nbytes: int, keys: Sequence[str], *,
                     read_id: Any = None, target: CudaTarget | None = None,
                     out: Any = None) -> Any:
        """Decode chunks ``index`` of ``src`` into a ``(len(index), decoded_nbytes)`` CuPy array.

        Runs on ``target``'s device and stream when given (those of the thread that asked for
        the read), else on the device that holds ``src`` (a host ``src``: the current device)
        and the calling thread's current CuPy stream.

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
        read_id
            Any hashable token of the read this batch belongs to: an nvCOMP refusal is logged
            at WARNING once per read (None: once per batch).
        target
            Device and stream to run on (see :func:`gds_zarr._device.current_cuda_target`).
        out
            Where the rows go: a C-contiguous ``(len(index), decoded_nbytes)`` uint8 CuPy array
            (e.g. a view of the caller's output whose chunks are contiguous). nvCOMP decodes
            straight into it when its address and ``decoded_nbytes`` are multiples of the
            codec's alignment (and no crc32c step follows the compressor); else the rows are
            copied into it once. None: a new array.

        Returns
        -------
        cupy.ndarray
            uint8, C-contiguous, one row per chunk (``out`` when given).

        Raises
        ------
        ValueError
            ``out`` is not a C-contiguous uint8 array of that shape.
        ChunkDecodeError
            A chunk that fails a check or a codec, naming its key.
        GPUDecodeError
            nvCOMP failed in a way that is not a refusal, naming the batch's first key.
        CUDAContextError
            The CUDA context is no longer usable (a sticky error, now or earlier).
        """
        import cupy

        index = np.asarray(index, np.int64)
        n = len(index)
        if out is not None and (out.dtype != cupy.uint8 or tuple(out.shape) != (
                n, decoded_nbytes) or not out.flags.c_contiguous):
            raise ValueError(f"out must be a C-contiguous uint8 array of shape "
                             f"{(n, decoded_nbytes)}, got {out.dtype} {tuple(out.shape)}")
        if n == 0:
            return out if out is not None else cupy.empty((0, decoded_nbytes), cupy.uint8)
        device = _device_for(src, target)
        row_keys = [keys[int(i)] for i in index]
        with on_cuda_target(target), device:
            _check_alive(device.id, row_keys[0])
            try:
                if len(steps) == 1 and steps[0].kind == "blosc":  # its own plan
                    from gds_zarr.decode import _blosc_gpu

                    return _blosc_gpu.decode_on_device(self, steps, src, index, decoded_nbytes,
                                                       row_keys, read_id, out)
                return self._decode_on_device(steps, src, index, decoded_nbytes, row_keys,
                                              read_id, out)
            except GDSZarrError:
                raise
            except Exception as e:
                # A kernel of ours (a checksum, a gather, the fallback's copies) met a dead
                # context: say so once, not as a raw CUDARuntimeError.
                reason = sticky_reason(e)
                if reason is None:
                    raise
                raise _mark_dead(device.id, reason, row_keys[0]) from e

    def _decode_on_device(self, steps: Sequence[BytesStep], src: BatchRead, index: np.ndarray,
                          decoded_nbytes: int, row_keys: list[str], read_id: Any,
                          into: Any) -> Any:
        import cupy

        n = len(index)
        data = cupy.asarray(src.data).reshape(-1).view(cupy.uint8)
        starts = np.asarray(src.offsets, np.int64)[index]
        stops = starts + np.asarray(src.sizes, np.int64)[index]
        if not self.supports(steps):
            names = ", ".join(s.name for s in steps)
            log.debug("decoding %d chunks on the CPU: chain [%s] is not all-GPU", n, names)
            gpu_decode_stats.add(cpu_chunks=n)
            rows = self._on_cpu(steps, data, starts, stops, decoded_nbytes, row_keys)
            if into is None:
                return rows
            into[...] = rows
            return into
        out, cpu_rows = self._decode_gpu(steps, data, starts, stops, decoded_nbytes, row_keys,
                                         read_id, into)
        gpu_decode_stats.add(device_chunks=int(n - cpu_rows.sum()), cpu_chunks=int(cpu_rows.sum()))
        if cpu_rows.any():
            rows = np.flatnonzero(cpu_rows)
            log.debug("decoding %d of %d chunks on the CPU", len(rows), n)
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
        # Pooled host copy (gds_zarr/_hostpool.py): not left in this worker thread's arena.
        host = BatchRead(data=packed.get(out=host_empty(packed.nbytes)), offsets=offsets,
                         sizes=sizes, present=np.ones(len(sizes), bool), device="cpu")
        rows = self._cpu.decode_batch(steps, host, np.arange(len(sizes)), decoded_nbytes,
                                      list(keys))
        return cupy.asarray(rows)

    def _decode_gpu(self, steps: Sequence[BytesStep], data: Any, starts: np.ndarray,
                    stops: np.ndarray, decoded_nbytes: int, keys: Sequence[str],
                    read_id: Any, into: Any = None) -> tuple[Any, np.ndarray]:
        """Run the steps on the device; return the rows (``into`` when given) and the rows
        left to the CPU."""
        import cupy

        n = len(starts)
        cpu_rows = np.zeros(n, bool)
        # The size each step must produce: checksum steps later in the chain strip 4 bytes
        # each (crc32c, fletcher32).
        sizes_after = [decoded_nbytes + 4 * sum(s.kind in _TRAILERS for s in steps[k + 1:])
                       for k in range(len(steps))]
        for k, step in enumerate(steps):
            reader = _device_reader(data)
            live = ~cpu_rows
            if step.kind == "crc32c":
                # Only the rows still on the device: the others' bytes are not staged here.
                rows = np.flatnonzero(live)
                row_keys = [keys[r] for r in rows]
                p = formats.check_crc32c_trailer(reader, starts[rows], stops[rows], row_keys)
                computed = device_crc32(data, p.starts, p.stops, formats.CRC32C_POLY)
                assert p.trailer is not None
                formats.raise_checksum_mismatch(computed, p.trailer, row_keys, step.name,
                                                "CRC-32C")
                stops = stops.copy()
                stops[rows] = p.stops
                continue
            if step.kind == "fletcher32":  # HDF5's checksum (decode/_filters_gpu.py)
                stops, short = _filters_gpu.check_fletcher32(data, reader, starts, stops,
                                                             np.flatnonzero(live), keys,
                                                             step.name)
                cpu_rows |= short
                continue
            if step.kind == "shuffle":  # the last step: HDF5's unshuffle, into the rows
                data, starts, stops, to_cpu = self._unshuffle(step, data, starts, stops, live,
                                                              decoded_nbytes, keys, into)
                cpu_rows |= to_cpu
                continue
            p = _CHECKS[step.kind](reader, starts, stops, sizes_after[k], keys)
            cpu_rows |= p.cpu_only
            # Straight into the caller's rows when nothing changes the bytes after it.
            last = sizes_after[k] == decoded_nbytes and steps[-1].kind != "shuffle"
            data, starts, stops, refused = self._nvcomp(step, data, p, ~cpu_rows,
                                                        sizes_after[k], keys, read_id,
                                                        into if last else None)
            cpu_rows |= refused
        # Rows out of the last step (or the raw payloads): sizes must be exact.
        got = stops - starts
        bad = ~cpu_rows & (got != decoded_nbytes)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ChunkDecodeError(keys[j], steps[-1].name if steps else "bytes",
                                   f"expected {decoded_nbytes} bytes, found {int(got[j])}")
        if not cpu_rows.all() and data.size >= n * decoded_nbytes \
                and (starts == np.arange(n, dtype=np.int64) * decoded_nbytes).all():
            # nvCOMP wrote every row in its place: the staging buffer is the answer.
            rows = data[: n * decoded_nbytes].reshape(n, decoded_nbytes)
            if into is None or rows.data.ptr == into.data.ptr:
                gpu_decode_stats.add(rows_in_place=1)
                return rows if into is None else into, cpu_rows
        out = cupy.empty((n, decoded_nbytes), cupy.uint8) if into is None else into
        live = np.flatnonzero(~cpu_rows)
        _gather(data, starts[live], got[live], out, live * decoded_nbytes)
        return out, cpu_rows

    def _unshuffle(self, step: BytesStep, data: Any, starts: np.ndarray, stops: np.ndarray,
                   live: np.ndarray, decoded_nbytes: int, keys: Sequence[str], into: Any
                   ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        """Undo numcodecs' byte shuffle of the ``live`` rows in one kernel launch, into
        ``into`` when given; returns the rows' buffer, starts and stops, and the rows left to
        the CPU (an element size that does not divide the chunk: numcodecs' error)."""
        import cupy

        n = len(starts)
        none = np.zeros(n, bool)
        elementsize = int(getattr(step.codec, "elementsize", 0))
        rows = np.flatnonzero(live)
        if elementsize <= 0 or decoded_nbytes % elementsize:
            return data, starts, stops, live.copy()
        got = stops[rows] - starts[rows]
        if (got != decoded_nbytes).any():
            j = int(rows[np.flatnonzero(got != decoded_nbytes)[0]])
            raise ChunkDecodeError(keys[j], step.name, f"expected {decoded_nbytes} bytes, "
                                                       f"found {int(stops[j] - starts[j])}")
        if elementsize == 1 or len(rows) == 0:
            return data, starts, stops, none
        out = into.reshape(-1) if into is not None else cupy.empty(n * decoded_nbytes,
                                                                    cupy.uint8)
        place = np.arange(n, dtype=np.int64) * decoded_nbytes
        _filters_gpu.unshuffle(data, starts[rows], out, place[rows], decoded_nbytes,
                               elementsize)
        return out, place, place + decoded_nbytes, none

    def _nvcomp(self, step: BytesStep, data: Any, p: formats.Payload, live: np.ndarray,
                expected: int, keys: Sequence[str], read_id: Any, into: Any = None
                ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        """Decode payloads ``p`` of the ``live`` rows in one nvCOMP call into a staging buffer
        (``into``, the caller's rows, when its layout is nvCOMP's).

        Returns the staging buffer, each row's start and stop there, and the rows nvCOMP
        refused (all live rows, or none): the caller decodes those on the CPU.

        Raises
        ------
        ChunkDecodeError
            A decoded size or checksum that does not match, naming the key.
        GPUDecodeError, CUDAContextError
            See :meth:`_call_nvcomp`.
        """
        import cupy
        from nvidia import nvcomp

        _route_nvcomp_allocations()
        algorithm = _COMPRESSORS[step.kind]
        device = cupy.cuda.Device().id
        stream = cupy.cuda.get_current_stream().ptr
        rows = np.flatnonzero(live)
        n = len(p.starts)
        none = np.zeros(n, bool)
        if len(rows) == 0:  # every chunk left to the CPU by the checks: nothing to decode
            z = np.zeros(n, np.int64)
            return data, z, z, none
        first = keys[int(rows[0])]
        try:
            align = self._call_nvcomp(algorithm, device, stream, first,
                                      lambda c: int(c.get_required_decompression_alignment()))
        except _Refused as e:
            return self._refused(step, e, data, p, live, expected, read_id)
        out = staging.output_layout(n, expected, align)
        if into is not None and out.rows_in_place and into.data.ptr % align == 0:
            buf = into.reshape(-1)  # nvCOMP writes the caller's rows: no copy afterwards
        else:
            buf = cupy.empty(out.nbytes, cupy.uint8)
        src_starts = p.starts[rows]
        sizes = p.stops[rows] - src_starts
        inputs = staging.input_layout(data.data.ptr, src_starts, sizes, align)
        src = data
        if not inputs.in_place:
            # Entries not aligned where they were read (shard inner chunks read together,
            # zlib files read by DMA): one packed copy, since one nvCOMP call carves one buffer.
            src = cupy.empty(inputs.packed_nbytes, cupy.uint8)
            _gather(data, src_starts, sizes, src, inputs.packed_offset)
            src_starts = inputs.packed_offset
            gpu_decode_stats.add(repacked_chunks=len(rows), repacked_bytes=inputs.packed_nbytes)
        out_offsets = out.offsets[rows]

        def decode(codec: Any) -> np.ndarray:
            srcs = nvcomp.as_arrays(src, src_starts.tolist(), sizes.tolist(), cuda_stream=stream)
            dsts = nvcomp.as_arrays(buf, out_offsets.tolist(), [expected] * len(rows),
                                    cuda_stream=stream)
            config = None
            if algorithm in _KNOWN_SIZE_CONFIG:
                # The decoded sizes are known: without a config nvCOMP syncs and walks every
                # RAW stream once to learn them.
                config = codec.decompression_config(
                    codec.compression_config([expected] * len(rows)))
            result = codec.decode(srcs, out=dsts, decompression_config=config)
            return np.asarray(result.buffer_sizes, np.int64)  # waits for the decode

        try:
            decoded = self._call_nvcomp(algorithm, device, stream, first, decode)
        except _Refused as e:
            return self._refused(step, e, data, p, live, expected, read_id)
        gpu_decode_stats.add(nvcomp_calls=1, nvcomp_chunks=len(rows))
        bad = decoded != expected
        if bad.any():
            j = int(rows[np.flatnonzero(bad)[0]])
            raise ChunkDecodeError(keys[j], step.name, f"decoded to {int(decoded[bad][0])} "
                                                       f"bytes, expected {expected}")
        out_stops = out.offsets + expected
        if p.trailer is not None and step.kind in ("gzip", "zlib"):
            computed = (device_crc32(buf, out.offsets[rows], out_stops[rows],
                                     formats.CRC32_POLY) if step.kind == "gzip"
                        else device_adler32(buf, out.offsets[rows], out_stops[rows]))
            formats.raise_checksum_mismatch(
                computed, p.trailer[rows], [keys[int(r)] for r in rows], step.name,
                "CRC-32" if step.kind == "gzip" else "Adler-32")
        return buf, out.offsets, out_stops, none

    def _refused(self, step: BytesStep, e: _Refused, data: Any, p: formats.Payload,
                 live: np.ndarray, expected: int, read_id: Any
                 ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        """Count and log a refusal; every live row goes to the CPU (its input: the original)."""
        nrows = int(live.sum())
        gpu_decode_stats.add(nvcomp_failures=1, refused_chunks=nrows)
        token = read_id if read_id is not None else object()
        level = logging.WARNING if self._logged.first(token) else logging.DEBUG
        log.log(level, "%s; decoding %d chunks on the CPU instead", e, nrows)
        empty = np.zeros(len(p.starts), np.int64)
        return data, empty, empty, live.copy()
