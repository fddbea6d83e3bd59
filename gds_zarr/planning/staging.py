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
  gathered into a packed, aligned buffer, whose size is returned so it can be counted.
* **decode outputs** (:func:`output_layout`): one slot per chunk at a multiple of the alignment.
  When the decoded size is a multiple of it (every power-of-two chunk), the slots are exactly the
  ``(n, decoded_nbytes)`` rows the pipeline scatters from: nvCOMP writes the rows in place.

:func:`unit_staging_bytes` bounds the three per chunk for the ``memory_budget``. Everything here is
device-free and tested on the CPU (tests/test_gpu_staging.py); ``io/_gpu.py`` and
``decode/_gpu.py`` use it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gds_zarr.planning.ranges import ReadPlan

__all__ = [
    "READ_ALIGN",
    "InputLayout",
    "OutputLayout",
    "align_reads",
    "align_up",
    "batch_staging_bytes",
    "input_layout",
    "output_layout",
    "unit_staging_bytes",
]

READ_ALIGN = 4096
"""Alignment of device addresses and file offsets that cuFile reads by DMA (GDS's page)."""


def align_up(x: np.ndarray | int, align: int) -> np.ndarray | int:
    """``x`` rounded up to a multiple of ``align`` (a positive integer), elementwise."""
    if align <= 0:
        raise ValueError(f"alignment must be positive, got {align}")
    if isinstance(x, np.ndarray):
        return -(-x.astype(np.int64) // align) * align
    return -(-int(x) // align) * align


def align_reads(plan: ReadPlan, request_sizes: np.ndarray, file_sizes: np.ndarray,
                align: int = READ_ALIGN) -> ReadPlan:
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
    slot = align_up(size, align)
    dest = np.cumsum(slot) - slot
    # Each request's read: the last read whose packed destination is at or before its own.
    live = sizes > 0
    req_dest = np.zeros(n, np.int64)
    if live.any():
        old = plan.request_dest[live]
        r = np.searchsorted(plan.read_dest, old, side="right") - 1
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
