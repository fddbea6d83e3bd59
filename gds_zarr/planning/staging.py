"""The staging layout of a GPU batch: where every byte lands, aligned, counted: pure numpy.

One batch on the GPU holds up to three staging areas, all laid out here so that the I/O backend,
the decoder and the budget agree without moving bytes twice:

* **read staging** (:func:`align_reads`): every coalesced kvikio read lands at a multiple of
  :data:`READ_ALIGN` (4 KiB) and starts at a 4 KiB-aligned file offset. cuFile moves data by DMA
  straight into device memory only for such reads; others go through its bounce buffers. A read
  is widened down to the page boundary before its first byte and up to the next one after its
  last (never past the end of the file), so a request's bytes keep their place relative to the
  page: a whole chunk file lands at a 4 KiB boundary, which is aligned for every nvCOMP format.
* **decode inputs** (:func:`input_layout`): an entry nvCOMP decodes must start at the codec's
  required decompression alignment (nvCOMP 6.0: Zstd 8, Gzip 8, LZ4 4, Deflate 4). Entries that
  already do (whole chunks, LZ4 after its 4-byte prefix) are decoded where they were read;
  only the others (inner chunks of a coalesced shard read, zlib after its 2-byte header) are
  gathered into a packed, aligned buffer, whose size is returned so it can be counted. A read
  that serves one request and does not go by DMA anyway (kvikio's compat mode, or below its
  ``gds_threshold``) is placed so that its decode input (:class:`Payload`) lands aligned:
  nothing to gather (``align_reads(..., payload=..., dma_min=...)``).
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
    "PAYLOADS",
    "READ_ALIGN",
    "InputLayout",
    "OutputLayout",
    "Payload",
    "align_reads",
    "align_up",
    "batch_staging_bytes",
    "chain_payload",
    "current_payload",
    "input_layout",
    "output_layout",
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


def chain_payload(kinds: Sequence[str]) -> Payload | None:
    """The nvCOMP input of a chain (step kinds in decode order): its one compressor's, where
    the other steps are ``crc32c`` (a trailer: the start does not move); else None."""
    found = [PAYLOADS[k] for k in kinds if k in PAYLOADS]
    if len(found) != 1 or any(k not in PAYLOADS and k != "crc32c" for k in kinds):
        return None
    return found[0]


# The payload of the GPU read in progress: the pipeline knows the chain, the kvikio backend
# lays the reads out, and the store between them has no argument for it (a context variable
# follows the read into the thread that reads).
_PAYLOAD: contextvars.ContextVar[Payload | None] = contextvars.ContextVar(
    "gds_zarr_read_payload", default=None)


@contextlib.contextmanager
def reading_for(payload: Payload | None) -> Iterator[None]:
    """Lay the reads of the enclosed block out for ``payload`` (see :func:`align_reads`)."""
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


def align_reads(plan: ReadPlan, request_sizes: np.ndarray, file_sizes: np.ndarray,
                align: int = READ_ALIGN, *, payload: Payload | None = None,
                dma_min: int | None = 0) -> ReadPlan:
    """Widen every read of ``plan`` to whole pages and place it at an aligned destination.

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
        Where the decode input lies in every request. A read that serves ONE request and goes
        through a bounce buffer anyway (``dma_min``) gains nothing from pages: it reads exactly
        that request, placed ``(-payload.offset) % payload.align`` bytes into its page, so that
        the input lands at a multiple of ``payload.align`` (zlib's, 2 bytes in: nvCOMP reads it
        in place instead of from a packed copy). Reads of several requests (a shard's inner
        chunks) keep their pages: their inputs lie where the file puts them.
    dma_min
        The smallest read cuFile moves by DMA (kvikio's ``gds_threshold``; 0: every read);
        None: none does (kvikio's compat mode: POSIX reads into a host bounce buffer, then a
        copy to the device).

    Returns
    -------
    ReadPlan
        The same reads, each starting at a page of its file (``read_offset``), covering whole
        pages except at the end of a file (``read_size``), at a multiple of ``align`` in the
        staging buffer (``read_dest``, ``total_size``). Request ``i``'s bytes are
        ``staging[request_dest[i] : request_dest[i] + size]``, as in ``plan``; only the places
        differ.
    """
    if align <= 0 or align & (align - 1):
        raise ValueError(f"alignment must be a power of two, got {align}")
    sizes = np.asarray(request_sizes, np.int64)
    n = len(plan.request_dest)
    if plan.nreads == 0:
        return ReadPlan.empty(n)
    off = plan.read_offset.astype(np.int64)
    end = off + plan.read_size
    lo = off & ~np.int64(align - 1)
    fsize = np.asarray(file_sizes, np.int64)[plan.read_file]
    hi = np.minimum(align_up(end, align), np.maximum(fsize, end))
    size = hi - lo
    # Each request's read: the last read whose packed destination is at or before its own.
    live = sizes > 0
    old = plan.request_dest[live]
    r = np.searchsorted(plan.read_dest, old, side="right") - 1
    shift = np.zeros(plan.nreads, np.int64)
    if payload is not None:
        bounced = np.ones(plan.nreads, bool) if dma_min is None else size < dma_min
        single = np.bincount(r, minlength=plan.nreads) == 1
        placed = single & bounced
        lo = np.where(placed, off, lo)
        size = np.where(placed, plan.read_size, size)
        shift[placed] = (-payload.offset) % payload.align
    # shift < payload.align <= 16: a placed read still fits the pages unit_staging_bytes counts.
    slot = align_up(size + shift, align)
    dest = np.cumsum(slot) - slot + shift
    req_dest = np.zeros(n, np.int64)
    req_dest[live] = dest[r] + (off[r] - lo[r]) + (old - plan.read_dest[r])
    return ReadPlan(plan.read_file.astype(np.int64), lo, size, dest, req_dest, int(slot.sum()))


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
        packed input copy, its output slot, and its row when the rows are not the slots. Not
        counted, as on the CPU: gap bytes a coalesced read takes along, and the one page per
        batch the I/O backend adds to start its buffer at a page.
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
