"""The staging layout of a GPU batch: where every byte lands, aligned, counted: pure numpy.

One batch on the GPU holds up to three staging areas, all laid out here so that the I/O backend,
the decoder and the budget agree without moving bytes twice:

* **read staging** (:func:`layout_reads`): a read that cuFile moves by DMA (GDS, at least
  kvikio's ``gds_threshold``) lands at a multiple of :data:`READ_ALIGN` (4 KiB) and starts at a
  4 KiB-aligned file offset, widened to whole pages (never past the end of the file), so a
  request's bytes keep their place relative to the page: a whole chunk file lands at a 4 KiB
  boundary, aligned for every nvCOMP format. Every other read (all of them in kvikio's compat
  mode) goes through a host bounce buffer anyway, so it is read on the host into a pinned
  buffer with ``preadv``, every request scattered to its own slot, then copied to the device
  once: each decode input lands at nvCOMP's alignment, wherever the file put it (a shard's
  inner chunks, zlib's input 2 bytes in).
* **decode inputs** (:func:`input_layout`): an entry nvCOMP decodes must start at the codec's
  required decompression alignment (nvCOMP 6.0: Zstd 8, Gzip 8, LZ4 4, Deflate 4). Entries that
  do (every host-staged one, whole chunk files, LZ4 after its 4-byte prefix) are decoded where
  they were read; only the others (inner chunks of a shard read by DMA, zlib files read by DMA)
  are gathered into a packed, aligned buffer, whose size is returned so it can be counted.
* **decode outputs** (:func:`output_layout`): one slot per chunk at a multiple of the alignment.
  When the decoded size is a multiple of it (every power-of-two chunk), the slots are exactly the
  ``(n, decoded_nbytes)`` rows the pipeline scatters from: nvCOMP writes the rows in place.

:func:`unit_staging_bytes` bounds the three per chunk for the ``memory_budget``. Everything here is
device-free and tested on the CPU (tests/test_gpu_staging.py); ``io/_gpu.py`` and
``decode/_gpu.py`` use it unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from gds_zarr.planning.ranges import ReadPlan

__all__ = [
    "DEFAULT_PAYLOAD",
    "IOV_SEGMENTS",
    "PAYLOADS",
    "READ_ALIGN",
    "HostReads",
    "InputLayout",
    "OutputLayout",
    "Payload",
    "ReadLayout",
    "align_up",
    "batch_staging_bytes",
    "chain_payload",
    "current_payload",
    "input_layout",
    "layout_reads",
    "output_layout",
    "place_requests",
    "reading_for",
    "unit_staging_bytes",
]

READ_ALIGN = 4096
"""Alignment of device addresses and file offsets that cuFile reads by DMA (GDS's page)."""


@dataclass(frozen=True, slots=True)
class Payload:
    """Where a chunk's nvCOMP input starts in its stored bytes, and the alignment it needs.

    Attributes
    ----------
    offset
        Bytes before the input: zlib's 2-byte header, LZ4's 4-byte size prefix; 0 for a zstd
        frame or a gzip member (handed over whole).
    align
        nvCOMP 6.0's required decompression alignment for the format.
    """

    offset: int
    align: int


#: The nvCOMP input of each compressor step the GPU decoder runs (see docs/gpu_decode.md).
PAYLOADS = {"zstd": Payload(0, 8), "gzip": Payload(0, 8), "zlib": Payload(2, 4),
            "lz4": Payload(4, 4)}


#: Steps around the compressor that leave where its input starts: checksum trailers before it,
#: the unshuffle of its output after it.
_BESIDE_PAYLOAD = frozenset({"crc32c", "fletcher32", "shuffle"})


def chain_payload(kinds: Sequence[str]) -> Payload | None:
    """The nvCOMP input of a chain (step kinds in decode order): its one compressor's, where
    the other steps are ``crc32c`` or ``fletcher32`` (trailers: the start does not move) or
    ``shuffle`` (after the decode); else None."""
    found = [PAYLOADS[k] for k in kinds if k in PAYLOADS]
    if len(found) != 1 or any(k not in PAYLOADS and k not in _BESIDE_PAYLOAD for k in kinds):
        return None
    return found[0]


# The payload of the GPU read in progress: the pipeline knows the chain, the kvikio backend
# lays the reads out, and the store between them has no argument for it (a context variable
# follows the read into the thread that reads).
_PAYLOAD: contextvars.ContextVar[Payload | None] = contextvars.ContextVar(
    "gds_zarr_read_payload", default=None)


@contextlib.contextmanager
def reading_for(payload: Payload | None) -> Iterator[None]:
    """Lay the reads of the enclosed block out for ``payload`` (see :func:`layout_reads`)."""
    token = _PAYLOAD.set(payload)
    try:
        yield
    finally:
        _PAYLOAD.reset(token)


def current_payload() -> Payload | None:
    """The payload set by :func:`reading_for`, or None."""
    return _PAYLOAD.get()


def align_up(x: np.ndarray | int, align: int) -> np.ndarray | int:
    """``x`` rounded up to a multiple of ``align`` (a positive integer), elementwise."""
    if align <= 0:
        raise ValueError(f"alignment must be positive, got {align}")
    if isinstance(x, np.ndarray):
        return -(-x.astype(np.int64) // align) * align
    return -(-int(x) // align) * align


DEFAULT_PAYLOAD = Payload(0, 16)
"""Placement of host-staged requests whose chain hands nvCOMP nothing (shard indexes, raw
chunks, Blosc frames): 16 bytes, the most any nvCOMP format asks."""

IOV_SEGMENTS = 512
"""Most segments one host read scatters (each may take a gap iovec after it: 1024, Linux's
``IOV_MAX``)."""


@dataclass(frozen=True, slots=True)
class HostReads:
    """Reads done on the host into a pinned buffer, each request at its own aligned place.

    A call is one ``preadv`` of a run of a file: its segments in file order, every one
    scattered to its destination, the bytes between two segments to a scratch buffer.

    Attributes
    ----------
    seg_offset, seg_size, seg_dest
        int64 per segment (distinct requests, sorted by file and offset): where in the file,
        how many bytes, where in the staging buffer.
    call_file
        int64 per call: the caller's file id.
    call_bounds
        int64, ``ncalls + 1`` entries: call ``c`` scatters segments
        ``call_bounds[c]:call_bounds[c + 1]``, which never overlap and lie in file order.
    """

    seg_offset: np.ndarray
    seg_size: np.ndarray
    seg_dest: np.ndarray
    call_file: np.ndarray
    call_bounds: np.ndarray

    @property
    def ncalls(self) -> int:
        return len(self.call_file)

    def gaps(self) -> np.ndarray:
        """int64 per segment: bytes between its end and the next segment of its call (0 for
        the last of a call)."""
        gap = np.zeros(len(self.seg_offset), np.int64)
        if len(gap) > 1:
            gap[:-1] = self.seg_offset[1:] - (self.seg_offset[:-1] + self.seg_size[:-1])
        gap[self.call_bounds[1:] - 1] = 0
        return gap


@dataclass(frozen=True, slots=True)
class ReadLayout:
    """Where every read of one GPU batch lands: :func:`layout_reads`.

    Attributes
    ----------
    dma
        The reads cuFile moves by DMA, widened to pages at page destinations, all at or after
        ``host_size`` (its ``request_dest`` and ``total_size`` are the batch's).
    host
        The host-staged reads: their destinations lie below ``host_size``.
    request_dest
        int64 per request, in the caller's order: where its bytes start (0 for empty ones).
    host_size
        Bytes ``[0, host_size)`` of the staging buffer, filled from the host by one copy.
    total_size
        Bytes the staging buffer holds.
    """

    dma: ReadPlan
    host: HostReads
    request_dest: np.ndarray
    host_size: int
    total_size: int


def place_requests(keys: np.ndarray, sizes: np.ndarray, payload: Payload
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Give every distinct request its own slot, placed so that its decode input is aligned.

    Parameters
    ----------
    keys
        int64 per request: where its bytes lie in some packed order of the source (a packed
        read plan's destination, an offset into concatenated bodies). Requests with equal key
        and size are the same bytes and share a slot.
    sizes
        int64 per request, all positive.
    payload
        Where the decode input lies in every request: each slot starts
        ``(-payload.offset) % payload.align`` bytes past a multiple of ``payload.align``, and
        is padded to a multiple of it, so the next slot is placed too.

    Returns
    -------
    tuple
        ``(order, first, dest, nbytes)``: the permutation sorting the requests by key (no sort
        where they come sorted, as a shard's chunks do), a bool per sorted request that opens
        a slot (the others repeat the one before), each request's slot start in the caller's
        order, and the bytes the slots span from 0.
    """
    keys = np.asarray(keys, np.int64)
    sizes = np.asarray(sizes, np.int64)
    n = len(keys)
    if n > 1 and not (keys[1:] > keys[:-1]).all():
        order = np.lexsort((sizes, keys))
    else:
        order = np.arange(n)
    k, z = keys[order], sizes[order]
    first = np.ones(n, bool)
    first[1:] = (k[1:] != k[:-1]) | (z[1:] != z[:-1])
    padded = align_up(z[first], payload.align)
    assert isinstance(padded, np.ndarray)
    shift = (-payload.offset) % payload.align
    slot_dest = np.cumsum(padded) - padded + shift
    dest = np.empty(n, np.int64)
    dest[order] = slot_dest[np.cumsum(first) - 1]
    return order, first, dest, int(padded.sum()) + shift if n else 0


def layout_reads(plan: ReadPlan, request_sizes: np.ndarray, file_sizes: np.ndarray,
                 align: int = READ_ALIGN, *, payload: Payload | None = None,
                 dma_min: int | None = 0) -> ReadLayout:
    """Lay out the reads of ``plan`` for the device: by DMA at pages, the rest placed.

    Parameters
    ----------
    plan
        The coalesced reads (destinations packed back to back).
    request_sizes
        int64 bytes per request (0 for empty requests, which have no read).
    file_sizes
        int64 size of every file id ``plan.read_file`` names (reads never pass the end).
    align
        Page size; a power of two.
    payload
        Where the decode input lies in every request (default :data:`DEFAULT_PAYLOAD`).
    dma_min
        The smallest read cuFile moves by DMA (kvikio's ``gds_threshold``; 0: every read);
        None: none does (kvikio's compat mode: POSIX reads into a host bounce buffer, then a
        copy to the device).

    Returns
    -------
    ReadLayout
        A read that cuFile moves by DMA (widened to whole pages, at least ``dma_min``) starts
        at a page of its file and lands at a multiple of ``align``: a whole chunk file lands
        aligned for every format; requests inside it keep their place relative to the page.
        Every other read goes through a bounce buffer anyway, so pages gain it nothing: it is
        read on the host, every distinct request of it to its own slot, placed
        ``(-payload.offset) % payload.align`` bytes past a multiple of ``payload.align`` so
        that its decode input lands aligned (zlib's 2 bytes in; a shard's inner chunks at
        whatever offsets the file gives them): nvCOMP reads every one in place. Requests that
        are the same range share a slot.
    """
    if align <= 0 or align & (align - 1):
        raise ValueError(f"alignment must be a power of two, got {align}")
    payload = payload or DEFAULT_PAYLOAD
    sizes = np.asarray(request_sizes, np.int64)
    n = len(plan.request_dest)
    z = np.zeros(0, np.int64)
    if plan.nreads == 0:
        return ReadLayout(ReadPlan.empty(n), HostReads(z, z, z, z, np.zeros(1, np.int64)),
                          np.zeros(n, np.int64), 0, 0)
    off = plan.read_offset.astype(np.int64)
    end = off + plan.read_size
    lo = off & ~np.int64(align - 1)
    fsize = np.asarray(file_sizes, np.int64)[plan.read_file]
    hi = np.minimum(align_up(end, align), np.maximum(fsize, end))
    paged = hi - lo
    by_dma = np.zeros(plan.nreads, bool) if dma_min is None else paged >= dma_min
    # Each request's read: the last read whose packed destination is at or before its own.
    live = np.flatnonzero(sizes > 0)
    r = np.searchsorted(plan.read_dest, plan.request_dest[live], side="right") - 1
    req_off = off[r] + (plan.request_dest[live] - plan.read_dest[r])
    req_dest = np.zeros(n, np.int64)

    # Host reads: distinct requests in file order (the packed destination orders them by
    # read and offset), each in a slot placed for the payload.
    host = ~by_dma[r]
    hidx = live[host]
    hr, ho, hs = r[host], req_off[host], sizes[hidx]
    order, first, dest_h, nbytes = place_requests(plan.request_dest[hidx], hs, payload)
    req_dest[hidx] = dest_h
    hr, ho, hs = hr[order], ho[order], hs[order]
    so, ss, sr, sd = ho[first], hs[first], hr[first], dest_h[order][first]
    host_size = int(align_up(nbytes, align)) if len(ss) else 0
    # A new preadv where the read changes, where a segment overlaps the one before (two
    # requests sharing bytes), and every IOV_SEGMENTS segments.
    starts_call = np.ones(len(so), bool)
    starts_call[1:] = (sr[1:] != sr[:-1]) | (so[1:] < so[:-1] + ss[:-1])
    run_first = np.flatnonzero(starts_call)
    run_len = np.diff(np.append(run_first, len(so)))
    if run_len.max(initial=0) > IOV_SEGMENTS:
        within = np.arange(len(so)) - np.repeat(run_first, run_len)
        starts_call |= within % IOV_SEGMENTS == 0
    bounds = np.append(np.flatnonzero(starts_call), len(so)).astype(np.int64)
    hosted = HostReads(so, ss, sd, plan.read_file[sr[starts_call]].astype(np.int64), bounds)

    # DMA reads: whole pages, page destinations after the host area.
    d = np.flatnonzero(by_dma)
    slot = align_up(paged[d], align)
    dest = host_size + np.cumsum(slot) - slot
    dma_dest = np.zeros(plan.nreads, np.int64)
    dma_dest[d] = dest
    on_dma = ~host
    req_dest[live[on_dma]] = (dma_dest[r[on_dma]] + (req_off[on_dma] - lo[r[on_dma]]))
    total = host_size + int(slot.sum())
    dma = ReadPlan(plan.read_file[d].astype(np.int64), lo[d], paged[d], dest.astype(np.int64),
                   req_dest, total)
    return ReadLayout(dma, hosted, req_dest, host_size, total)


@dataclass(frozen=True, slots=True)
class InputLayout:
    """Where nvCOMP reads the entries of one call: all in place, or all in a packed buffer.

    ``nvcomp.as_arrays`` carves one call's entries out of ONE buffer, so a call reads either
    the read staging (every entry aligned there) or one packed copy of every entry.

    Attributes
    ----------
    aligned
        bool per entry: its address in the read staging is aligned.
    packed_offset
        int64 per entry: its offset in the packed buffer.
    packed_nbytes
        Size of the packed buffer; 0 when every entry is aligned (nothing is copied).
    """

    aligned: np.ndarray
    packed_offset: np.ndarray
    packed_nbytes: int

    @property
    def in_place(self) -> bool:
        """True when nvCOMP reads every entry where it was read (no copy)."""
        return self.packed_nbytes == 0


def input_layout(base_address: int, starts: np.ndarray, sizes: np.ndarray,
                 align: int) -> InputLayout:
    """Whether decode inputs can be read where they lie, and a packed place for them if not.

    Parameters
    ----------
    base_address
        Device address of the buffer ``starts`` index (CuPy's ``data.ptr``; 0 in tests).
    starts, sizes
        int64 offset and size of every entry in that buffer.
    align
        nvCOMP's required decompression alignment.
    """
    starts = np.asarray(starts, np.int64)
    sizes = np.asarray(sizes, np.int64)
    aligned = ((int(base_address) + starts) % align) == 0
    padded = align_up(sizes, align)
    packed = (np.cumsum(padded) - padded).astype(np.int64)
    return InputLayout(aligned, packed, 0 if aligned.all() else int(padded.sum()))


@dataclass(frozen=True, slots=True)
class OutputLayout:
    """One fixed-capacity output slot per chunk.

    Attributes
    ----------
    stride
        Bytes from one slot to the next (a multiple of the alignment).
    offsets
        int64 start of every slot.
    nbytes
        Size of the whole output buffer.
    rows_in_place
        True when ``stride == decoded_nbytes``: the buffer is the ``(n, decoded_nbytes)`` rows.
    """

    stride: int
    offsets: np.ndarray
    nbytes: int
    rows_in_place: bool


def output_layout(n: int, decoded_nbytes: int, align: int) -> OutputLayout:
    """Slots for ``n`` chunks of ``decoded_nbytes`` each, every one starting aligned."""
    stride = int(align_up(max(int(decoded_nbytes), 1), align))
    return OutputLayout(stride, np.arange(n, dtype=np.int64) * stride, max(1, n * stride),
                        stride == decoded_nbytes)


def unit_staging_bytes(encoded_nbytes: np.ndarray, decoded_nbytes: int, *,
                       read_align: int = READ_ALIGN, decode_align: int = 16,
                       steps: int = 1) -> np.ndarray:
    """Upper bound of the device bytes each chunk of a GPU batch stages, for ``memory_budget``.

    What the pipeline splits batches by (``split_by_budget`` takes a cost per unit), in place of
    ``encoded + decoded`` on the CPU.

    Parameters
    ----------
    encoded_nbytes
        int64 encoded size (or its estimate) of every chunk.
    decoded_nbytes
        Decoded size of one chunk.
    read_align
        Page alignment of reads: a read covers at most ceil((size + page - 1) / page) pages.
    decode_align
        nvCOMP's decompression alignment (16 is the most any format needs).
    steps
        Compressor steps in the chain (0: crc32c or raw bytes only, 1: one compressor).

    Returns
    -------
    numpy.ndarray
        int64 per chunk: its read staging (as its own read: the worst case for padding), a
        packed input copy, its output slot, and its row when the rows are not the slots. A
        host-staged chunk's pinned host copy (at most its size plus 15 bytes) lives only
        while the batch is read, before any slot or row exists, and such a chunk needs no
        packed copy: the packed term covers it. Not counted, as on the CPU: gap bytes a
        coalesced read takes along, and the one page per batch the I/O backend adds to start
        its buffer at a page (and the host area's rounding to one).
    """
    enc = np.asarray(encoded_nbytes, np.int64)
    reads = align_up(enc + read_align - 1, read_align)
    assert isinstance(reads, np.ndarray)
    if steps == 0:
        return reads + int(decoded_nbytes)
    packed = align_up(enc, decode_align)
    assert isinstance(packed, np.ndarray)
    out = output_layout(1, decoded_nbytes, decode_align)
    rows = 0 if out.rows_in_place else int(decoded_nbytes)
    return reads + packed + out.stride + rows


def batch_staging_bytes(encoded_nbytes: np.ndarray, decoded_nbytes: int, *,
                        read_align: int = READ_ALIGN, decode_align: int = 16,
                        steps: int = 1) -> int:
    """Upper bound of the device bytes one GPU batch stages (the sum of
    :func:`unit_staging_bytes`; arguments as there)."""
    return int(unit_staging_bytes(encoded_nbytes, decoded_nbytes, read_align=read_align,
                                  decode_align=decode_align, steps=steps).sum())
