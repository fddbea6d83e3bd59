"""Blosc on the GPU: the batch plan, one nvCOMP call per inner codec, one unshuffle kernel.

nvCOMP has LZ4 and Zstd block decoders but no Blosc container and no shuffle filter. For a
batch of one-step Blosc chunks, :func:`decode_on_device`:

1. plans every chunk at once with :func:`gds_zarr.planning.blosc.plan_parts`, reading only
   headers, block starts and stream sizes from the device (one small gather per split round),
   with c-blosc's own checks: a bad chunk raises :class:`~gds_zarr.errors.ChunkDecodeError`
   naming its key before anything is decoded (a batch whose plan would exceed its share of
   ``memory_budget`` is planned and decoded in parts: then a bad block table is found when its
   part is planned);
2. decodes all LZ4 streams of all blocks of all chunks in ONE ``Codec.decode`` call, and all Zstd
   streams in another, straight from the read buffer when every stream lies aligned there (else
   from one packed copy), into one staging buffer in the chunks' *shuffled* layout (directly at
   their place when every output offset is aligned, else into aligned slots and gathered);
   raw streams and memcpyed frames are one gather kernel;
3. undoes byte or bit shuffle (with the bytes c-blosc leaves unshuffled at the end of a block)
   in ONE CuPy kernel launch over every block of the batch, writing the returned rows.

Chunks nvCOMP cannot decode (BloscLZ and Zlib inside, plan ``fallback`` rows, a batch nvCOMP
refused, a stream that decoded to another size) are decoded on the host by the CPU decoder
(c-blosc, else numcodecs: the reference, error included) and copied to their rows.

Never run on a GPU yet: the host parts (plan, layouts, the kernel's index arithmetic compiled
as host C++) are tested on the CPU; tests_gpu/test_blosc_gpu.py compares with the CPU bit for
bit where a GPU exists. Invalid LZ4/Zstd streams given to nvCOMP are undefined behaviour (see
REFERENCE.md): the plan's checks bound every stream inside its chunk, not its contents.

CuPy and nvCOMP are imported lazily: importing this module needs neither.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gds_zarr._batch import BatchRead
from gds_zarr.decode._base import BytesStep
from gds_zarr.planning.blosc import SHUFFLE_NONE, BloscPlan, plan_limit, plan_parts

if TYPE_CHECKING:
    from gds_zarr.decode._gpu import NvcompDecoder

__all__ = ["NVCOMP_CODECS", "UNSHUFFLE_KERNEL", "StreamGroup", "decode_on_device", "handles",
           "stream_groups"]

#: Blosc compressor codes nvCOMP decodes, and its algorithm names. (Blosc's Zlib streams are
#: zlib-wrapped and BloscLZ has no GPU decoder: those chunks go to the CPU.)
NVCOMP_CODECS = {1: "LZ4", 4: "Zstd"}
_THREADS = 256

UNSHUFFLE_KERNEL = r"""
extern "C" __global__ void gdsz_blosc_unshuffle(
    const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
    const long long* __restrict__ block_off, const long long* __restrict__ block_size,
    const signed char* __restrict__ block_shuffle, const long long* __restrict__ block_typesize)
{
    // One CUDA block per Blosc block; each thread writes output bytes p, p + blockDim.x, ...
    // Byte shuffle: byte j of item i lies at j * m + i (m = size / typesize items).
    // Bit shuffle: bit k of byte j of item i is bit (j * 8 + k) * m + i, LSB first; c-blosc
    // bit-shuffles only blocks with m % 8 == 0 (the plan marks the others SHUFFLE_NONE).
    // Either way the last size % typesize bytes are stored as they are.
    const long long b = blockIdx.x;
    const long long off = block_off[b], size = block_size[b], ts = block_typesize[b];
    const int shuffle = block_shuffle[b];
    const unsigned char* s = src + off;
    unsigned char* d = dst + off;
    const long long m = size / ts, whole = m * ts, plane = m >> 3;
    for (long long p = threadIdx.x; p < size; p += blockDim.x) {
        unsigned char v;
        if (shuffle == 0 || p >= whole) {
            v = s[p];
        } else {
            const long long i = p / ts, j = p - i * ts;
            if (shuffle == 1) {
                v = s[j * m + i];
            } else {
                const unsigned char* q = s + j * 8 * plane + (i >> 3);
                const int bit = (int)(i & 7);
                v = 0;
                for (int k = 0; k < 8; ++k)
                    v |= (unsigned char)(((q[k * plane] >> bit) & 1) << k);
            }
        }
        d[p] = v;
    }
}
"""


def handles(steps: Sequence[BytesStep]) -> bool:
    """True for a one-step Blosc chain: this module decodes it (see :func:`decode_on_device`)."""
    return len(steps) == 1 and steps[0].kind == "blosc"


@dataclass(frozen=True, slots=True)
class StreamGroup:
    """The streams of one nvCOMP call (one inner codec) and where they go.

    Attributes
    ----------
    algorithm
        nvCOMP's algorithm name.
    streams
        int64 indices into the plan's stream arrays.
    out_offsets
        int64 offset of each stream's decoded bytes in the shuffled staging buffer
        (``row * row_stride + stream_dst``).
    direct
        Every output offset is aligned: nvCOMP writes into the staging buffer itself; else it
        writes into aligned slots (``slot_offsets``) and a gather moves them into place.
    slot_offsets, slot_nbytes
        Aligned slot of each stream and the slots' total size (used when not ``direct``).
    """

    algorithm: str
    streams: np.ndarray
    out_offsets: np.ndarray
    direct: bool
    slot_offsets: np.ndarray
    slot_nbytes: int


def stream_groups(plan: BloscPlan, cpu_rows: np.ndarray, row_stride: int,
                  align: dict[str, int], base_address: int = 0) -> list[StreamGroup]:
    """One :class:`StreamGroup` per nvCOMP codec with streams in rows not left to the CPU.

    Parameters
    ----------
    plan
        The batch's plan.
    cpu_rows
        bool per row: decoded on the host (its streams are not in any group).
    row_stride
        Bytes between rows of the shuffled staging buffer.
    align
        nvCOMP's required decompression alignment per algorithm.
    base_address
        Device address of the staging buffer (its offsets are aligned only if it is).
    """
    keep = ~cpu_rows[plan.stream_row]
    groups = []
    for code, algorithm in NVCOMP_CODECS.items():
        streams = np.flatnonzero(keep & (plan.stream_codec == code))
        if streams.size == 0:
            continue
        a = align[algorithm]
        out = plan.stream_row[streams] * row_stride + plan.stream_dst[streams]
        dsize = plan.stream_dsize[streams]
        padded = -(-dsize // a) * a
        slots = (np.cumsum(padded) - padded).astype(np.int64)
        direct = bool(((base_address + out) % a == 0).all())
        groups.append(StreamGroup(algorithm, streams, out, direct, slots, int(padded.sum())))
    return groups


def decode_on_device(decoder: NvcompDecoder, steps: Sequence[BytesStep], src: BatchRead,
                     index: np.ndarray, decoded_nbytes: int, keys: list[str],
                     read_id: Any, into: Any) -> Any:
    """Decode one-step Blosc chunks ``index`` of ``src`` into ``(len(index), decoded_nbytes)``
    rows (``into`` when given), with their keys ``keys``.

    Called by :meth:`gds_zarr.decode._gpu.NvcompDecoder.decode_batch` (its contract, errors and
    ``out`` check) on the batch's device and stream, inside its fault containment. The batch is
    planned and decoded in parts whose plans stay within the budget's share
    (:func:`gds_zarr.planning.blosc.plan_parts`); a chunk whose plan alone would not fit is
    decoded on the host by c-blosc.
    """
    import cupy

    from gds_zarr.decode import _gpu

    n = len(index)
    data = cupy.asarray(src.data).reshape(-1).view(cupy.uint8)
    starts = np.asarray(src.offsets, np.int64)[index]
    stops = starts + np.asarray(src.sizes, np.int64)[index]
    parts = plan_parts(_gpu._device_reader(data), starts, stops, decoded_nbytes, keys,
                       plan_limit())
    part = next(parts, None)  # every header is checked here, before anything decodes

    out = into if into is not None else cupy.empty((n, decoded_nbytes), cupy.uint8)
    _gpu._route_nvcomp_allocations()
    dev = cupy.cuda.Device().id
    stream = cupy.cuda.get_current_stream().ptr
    align: dict[str, int] = {}
    refused: dict[int, Exception] = {}
    for code, algorithm in NVCOMP_CODECS.items():
        try:
            align[algorithm] = decoder._call_nvcomp(
                algorithm, dev, stream, keys[0],
                lambda c: int(c.get_required_decompression_alignment()))
        except _gpu._Refused as e:
            align[algorithm] = 0  # refused: its rows go to the CPU
            refused[code] = e
    while part is not None:
        lo, hi, plan = part
        del part
        _decode_part(decoder, steps, plan, data, starts[lo:hi], stops[lo:hi], decoded_nbytes,
                     keys[lo:hi], read_id, out[lo:hi], align, refused, dev, stream)
        del plan  # the next part is planned without this one alive
        part = next(parts, None)
    return out


def _decode_part(decoder: NvcompDecoder, steps: Sequence[BytesStep], plan: BloscPlan,
                 data: Any, starts: np.ndarray, stops: np.ndarray, decoded_nbytes: int,
                 keys: list[str], read_id: Any, out: Any, align: dict[str, int],
                 refused: dict[int, Exception], dev: int, stream: int) -> None:
    """Decode the rows of one plan into ``out`` (their rows of the batch's output): streams by
    nvCOMP, raw streams by one gather, one unshuffle launch, the rest on the CPU."""
    import cupy

    from gds_zarr.decode import _gpu

    n = len(plan.codec)
    # Rows nvCOMP cannot do: the plan's fallbacks and rows with a stream of another codec.
    cpu_rows = plan.fallback.copy()
    other = (plan.stream_codec >= 0) & ~np.isin(plan.stream_codec, list(NVCOMP_CODECS))
    cpu_rows[plan.stream_row[other]] = True
    for code, e in refused.items():  # the codec refused to say its alignment
        rows = np.zeros(n, bool)
        rows[plan.stream_row[plan.stream_codec == code]] = True
        rows &= ~cpu_rows
        if rows.any():
            _log_refusal(decoder, e, int(rows.sum()), read_id)
            cpu_rows |= rows

    shuffled = bool((plan.block_shuffle[~cpu_rows[plan.block_row]] != SHUFFLE_NONE).any())
    # Without a shuffle the streams decode straight into the rows; else into a staging buffer.
    stage = cupy.empty(n * decoded_nbytes, cupy.uint8) if shuffled else out.reshape(-1)

    for group in stream_groups(plan, cpu_rows, decoded_nbytes, align, int(stage.data.ptr)):
        bad_rows = _nvcomp_group(decoder, plan, group, data, stage, dev, stream, keys, read_id,
                                 align[group.algorithm])
        cpu_rows |= bad_rows

    raw = np.flatnonzero((plan.stream_codec < 0) & ~cpu_rows[plan.stream_row])
    if raw.size:  # stored streams and memcpyed frames: one gather
        _gpu._gather(data, plan.stream_src[raw], plan.stream_dsize[raw], stage,
                     plan.stream_row[raw] * decoded_nbytes + plan.stream_dst[raw])
    if shuffled:
        blocks = np.flatnonzero(~cpu_rows[plan.block_row])
        if blocks.size:
            _unshuffle_kernel()((int(blocks.size),), (_THREADS,), (
                stage, out, _gpu._dev(plan.block_row[blocks] * decoded_nbytes
                                      + plan.block_dst[blocks]),
                _gpu._dev(plan.block_size[blocks]),
                cupy.asarray(plan.block_shuffle[blocks].astype(np.int8)),
                _gpu._dev(plan.block_typesize[blocks])))
    ncpu = int(cpu_rows.sum())
    _gpu.gpu_decode_stats.add(device_chunks=n - ncpu, cpu_chunks=ncpu)
    if ncpu:
        rows = np.flatnonzero(cpu_rows)
        out[cupy.asarray(rows)] = decoder._on_cpu(steps, data, starts[rows], stops[rows],
                                                  decoded_nbytes, [keys[r] for r in rows])


def _nvcomp_group(decoder: NvcompDecoder, plan: BloscPlan, group: StreamGroup, data: Any,
                  stage: Any, dev: int, stream: int, keys: list[str], read_id: Any,
                  align: int) -> np.ndarray:
    """Decode one codec's streams in one nvCOMP call; return the rows to redo on the CPU
    (all of the group's rows if nvCOMP refused, else those with a stream of the wrong size)."""
    import cupy
    from nvidia import nvcomp

    from gds_zarr.decode import _gpu
    from gds_zarr.planning import staging

    s = group.streams
    rows = plan.stream_row[s]
    cpu_rows = np.zeros(len(plan.codec), bool)
    src_starts = plan.stream_src[s]
    sizes = plan.stream_size[s]
    dsizes = plan.stream_dsize[s]
    inputs = staging.input_layout(data.data.ptr, src_starts, sizes, align)
    src = data
    if not inputs.in_place:  # split streams rarely lie aligned: one packed copy
        src = cupy.empty(inputs.packed_nbytes, cupy.uint8)
        _gpu._gather(data, src_starts, sizes, src, inputs.packed_offset)
        src_starts = inputs.packed_offset
        _gpu.gpu_decode_stats.add(repacked_chunks=int(np.unique(rows).size),
                                  repacked_bytes=inputs.packed_nbytes)
    if group.direct:
        dst, dst_offsets = stage, group.out_offsets
    else:
        dst, dst_offsets = cupy.empty(max(1, group.slot_nbytes), cupy.uint8), group.slot_offsets
    algorithm = group.algorithm

    def decode(codec: Any) -> np.ndarray:
        srcs = nvcomp.as_arrays(src, src_starts.tolist(), sizes.tolist(), cuda_stream=stream)
        dsts = nvcomp.as_arrays(dst, dst_offsets.tolist(), dsizes.tolist(), cuda_stream=stream)
        config = None
        if algorithm in _gpu._KNOWN_SIZE_CONFIG:  # sizes known: no sizing walk over streams
            config = codec.decompression_config(codec.compression_config(dsizes.tolist()))
        result = codec.decode(srcs, out=dsts, decompression_config=config)
        return np.asarray(result.buffer_sizes, np.int64)  # waits for the decode

    try:
        decoded = decoder._call_nvcomp(algorithm, dev, stream, keys[int(rows[0])], decode)
    except _gpu._Refused as e:
        _log_refusal(decoder, e, int(np.unique(rows).size), read_id)
        cpu_rows[rows] = True
        return cpu_rows
    _gpu.gpu_decode_stats.add(nvcomp_calls=1, nvcomp_chunks=int(s.size))
    # c-blosc refuses a stream that does not decode to exactly its size: the CPU decoder
    # (numcodecs) says how, for those rows.
    cpu_rows[rows[decoded != dsizes]] = True
    if not group.direct:
        ok = ~cpu_rows[rows]
        _gpu._gather(dst, group.slot_offsets[ok], dsizes[ok], stage, group.out_offsets[ok])
    return cpu_rows


def _log_refusal(decoder: NvcompDecoder, e: Exception, nrows: int, read_id: Any) -> None:
    """Count an nvCOMP refusal; log it at WARNING once per read (as the other codecs do)."""
    import logging

    from gds_zarr.decode import _gpu

    _gpu.gpu_decode_stats.add(nvcomp_failures=1, refused_chunks=nrows)
    token = read_id if read_id is not None else object()
    level = logging.WARNING if decoder._logged.first(token) else logging.DEBUG
    _gpu.log.log(level, "%s; decoding %d Blosc chunks on the CPU instead", e, nrows)


@functools.cache
def _unshuffle_kernel() -> Any:
    import cupy

    return cupy.RawKernel(UNSHUFFLE_KERNEL, "gdsz_blosc_unshuffle")
