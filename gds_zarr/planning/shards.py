"""Shard indexes: where they are, parsing them, and the byte ranges of inner chunks. Pure numpy.

A shard index is ``chunks_per_shard + (2,)`` little-endian uint64 pairs ``(offset, nbytes)`` per
inner chunk, optionally followed by a 4-byte little-endian CRC-32C; ``(2^64-1, 2^64-1)`` marks an
empty inner chunk. The index is at the start or the end of the shard file.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numcodecs
import numpy as np

from gds_zarr._batch import BatchRead
from gds_zarr.errors import ShardIndexError

__all__ = ["EMPTY", "InnerSlices", "ShardLayout", "index_request", "inner_ranges", "inner_slices",
           "parse_indexes"]

EMPTY = np.uint64(2**64 - 1)
#: Boxes of at most this many inner chunks are planned in plain Python (see inner_slices).
_SMALL_BOX = 64
#: Index bytes of a batch gathered with one fancy-indexing copy (its positions: 8x as many).
_GATHER_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ShardLayout:
    """A ``sharding_indexed`` codec as planning sees it (``decode/chain.py`` builds it)."""

    chunk_shape: tuple[int, ...]
    chunks_per_shard: tuple[int, ...]
    index_location: Literal["start", "end"]
    index_crc32c: bool

    @property
    def index_nbytes(self) -> int:
        """Encoded size of the shard index: 16 bytes per inner chunk, plus 4 with crc32c."""
        return 16 * int(np.prod(self.chunks_per_shard, dtype=np.int64)) + (
            4 if self.index_crc32c else 0)


def index_request(layout: ShardLayout) -> tuple[int, int]:
    """``(start, stop)`` of a shard's index in the I/O backend's encoding (see io/_base.py).

    At the end of the shard it is a suffix request ``(-n, -1)``; at the start ``(0, n)``.
    """
    n = layout.index_nbytes
    return (-n, -1) if layout.index_location == "end" else (0, n)


def parse_indexes(batch: BatchRead, keys: Sequence[str],
                  layout: ShardLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse the shard indexes read in ``batch`` (request ``i`` = shard ``keys[i]``).

    Parameters
    ----------
    batch
        One index read per shard, on the host.
    keys
        Shard keys, for error messages.
    layout
        The shard layout (index size, crc32c).

    Returns
    -------
    offsets, nbytes : numpy.ndarray
        uint64, shape ``(n_shards, n_inner)`` (inner chunks in C order).
    empty : numpy.ndarray
        bool, shape ``(n_shards, n_inner)``: True for empty inner chunks (and missing shards).

    Raises
    ------
    ShardIndexError
        A shard shorter than its index, a crc32c mismatch, or entries that are absurd
        (overflowing, overlapping the index at the start, half-empty).
    """
    n_inner = int(np.prod(layout.chunks_per_shard, dtype=np.int64))
    n = len(batch)
    entry_bytes = 16 * n_inner
    present = np.asarray(batch.present, dtype=bool)
    sizes = np.asarray(batch.sizes, dtype=np.int64)
    short = present & (sizes != layout.index_nbytes)
    if short.any():
        i = int(np.flatnonzero(short)[0])
        raise ShardIndexError(keys[i], f"shard has {int(sizes[i])} bytes, fewer than its "
                                       f"{layout.index_nbytes}-byte index")
    data = np.asarray(batch.data)
    raw = np.zeros((n, entry_bytes), dtype=np.uint8)
    rows = np.flatnonzero(present)
    if len(rows):
        offs = np.asarray(batch.offsets, dtype=np.int64)[rows]
        if len(rows) * entry_bytes <= _GATHER_BYTES:
            # Every index with one fancy-indexing copy: row offsets + a column ramp.
            raw[rows] = data[offs[:, None] + np.arange(entry_bytes, dtype=np.int64)]
        else:  # a slice copy each: the gather's int64 positions would be 8x the indexes
            for r, o in zip(rows.tolist(), offs.tolist(), strict=True):
                raw[r] = data[o: o + entry_bytes]
        if layout.index_crc32c:
            _verify_crc(data, offs, entry_bytes, [keys[i] for i in rows])
    table = raw.view("<u8").reshape(n, n_inner, 2).astype(np.uint64, copy=False)
    offsets, nbytes = table[..., 0], table[..., 1]
    empty_off, empty_len = offsets == EMPTY, nbytes == EMPTY
    empty = empty_off & empty_len
    empty[~present] = True
    _validate(offsets, nbytes, empty, empty_off ^ empty_len, present, keys, layout)
    return offsets, nbytes, empty


def _verify_crc(data: np.ndarray, offs: np.ndarray, entry_bytes: int, keys: list[str]) -> None:
    checker = numcodecs.CRC32C(location="end")
    for o, key in zip(offs.tolist(), keys, strict=True):  # a few shards: one small check each
        try:
            checker.decode(data[o: o + entry_bytes + 4])
        except Exception as e:  # noqa: BLE001 - numcodecs raises RuntimeError or ValueError
            raise ShardIndexError(key, f"index crc32c check failed ({e})") from None


def _validate(offsets: np.ndarray, nbytes: np.ndarray, empty: np.ndarray, half: np.ndarray,
              present: np.ndarray, keys: Sequence[str], layout: ShardLayout) -> None:
    bad = half & present[:, None]
    why = "one of offset/nbytes is 2^64-1 but not the other"
    if not bad.any():
        used = ~empty
        end = offsets + nbytes
        overflow = used & (end < offsets)
        bad, why = overflow, "offset + nbytes overflows"
        if not bad.any() and layout.index_location == "start":
            bad = used & (offsets < np.uint64(layout.index_nbytes))
            why = "an entry points into the index at the start of the shard"
        if not bad.any():
            bad = used & (nbytes > np.uint64(1 << 62))
            why = "an entry claims an absurd size"
        if not bad.any():
            # Offsets past 2^62 would turn negative (suffix requests) as int64 byte ranges.
            bad = used & (offsets > np.uint64(1 << 62))
            why = "an entry claims an absurd offset"
    if bad.any():
        s, c = np.argwhere(bad)[0]
        raise ShardIndexError(keys[int(s)], f"inner chunk {int(c)}: {why} "
                                            f"(offset={int(offsets[s, c])}, "
                                            f"nbytes={int(nbytes[s, c])})")


def inner_ranges(offsets: np.ndarray, nbytes: np.ndarray, shard: np.ndarray,
                 inner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Byte ranges ``(starts, stops)`` (int64) of inner chunks ``inner`` of shards ``shard``.

    Both index arrays have one entry per wanted inner chunk; empty chunks must be filtered out
    by the caller (their entries are 2^64-1).
    """
    starts = offsets[shard, inner].astype(np.int64)
    return starts, starts + nbytes[shard, inner].astype(np.int64)


@dataclass(frozen=True, slots=True)
class InnerSlices:
    """The inner chunks a box selection of one shard touches, in C order (zarr's order).

    Attributes
    ----------
    inner
        int64 flat (C-order) index of each inner chunk in the shard.
    chunk_sel, out_sel
        Per inner chunk: the slices inside the chunk, and where they go in the selection's
        output (shape :attr:`shape`), exactly as zarr's ``BasicIndexer`` yields them.
    shape
        Shape of the selection's output, with length 1 on integer axes.
    int_axes
        Axes selected by an integer (kept here with length 1; zarr drops them).
    """

    inner: np.ndarray
    chunk_sel: list[tuple[slice, ...]]
    out_sel: list[tuple[slice, ...]]
    shape: tuple[int, ...]
    int_axes: tuple[int, ...] = ()


def inner_slices(selection: Any, shard_shape: tuple[int, ...],
                 layout: ShardLayout) -> InnerSlices | None:
    """Plan a box selection of one shard without zarr's per-chunk indexer, or None.

    zarr's indexer yields one Python object per inner chunk through several generator layers,
    which costs more than decoding a small chunk; here each axis is planned once and the units
    are the product of the axes (``itertools.product``, in C).

    Parameters
    ----------
    selection
        The shard's ``chunk_selection`` from zarr's ``batch_info``.
    shard_shape
        Shape of the shard.
    layout
        The shard layout (inner chunk shape, chunks per shard).

    Returns
    -------
    InnerSlices or None
        None unless ``selection`` is one slice of step 1 or one in-range integer per axis
        (then zarr's indexer must plan it: steps, arrays). An integer is planned as a slice of
        length 1 and listed in ``int_axes``.
    """
    sel = selection if isinstance(selection, tuple) else (selection,)
    if len(sel) != len(shard_shape):
        return None
    int_axes = []
    as_slices = []
    for d, (x, extent) in enumerate(zip(sel, shard_shape, strict=True)):
        if type(x) is slice:  # the common case first: this runs once per shard of a read
            as_slices.append(x)
        elif isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_):
            i = int(x)
            if not 0 <= i < extent:
                return None
            int_axes.append(d)
            as_slices.append(slice(i, i + 1))
        else:
            return None
    sel = tuple(as_slices)
    ids: list[range] = []
    csel: list[list[slice]] = []
    osel: list[list[slice]] = []
    shape: list[int] = []
    for x, extent, cs in zip(sel, shard_shape, layout.chunk_shape, strict=True):
        start, stop, step = x.indices(extent)
        if step != 1:
            return None
        stop = max(stop, start)
        shape.append(stop - start)
        first, last = start // cs, -(-stop // cs)
        ids.append(range(first, last))
        c_d: list[slice] = []
        o_d: list[slice] = []
        for c in range(first, last):
            lo, hi = max(start, c * cs), min(stop, (c + 1) * cs)
            c_d.append(slice(lo - c * cs, hi - c * cs, 1))
            o_d.append(slice(lo - start, hi - start))
        csel.append(c_d)
        osel.append(o_d)
    if 0 in shape:  # nothing selected (zarr never asks; kept total for direct callers)
        return InnerSlices(np.zeros(0, np.int64), [], [], tuple(shape), tuple(int_axes))
    if math.prod(len(r) for r in ids) <= _SMALL_BOX:
        # A few inner chunks (a window, one element): C-order indexes in plain Python, which
        # costs less than the array calls below.
        strides = [math.prod(layout.chunks_per_shard[d + 1:]) for d in range(len(ids))]
        flat = [sum(t) for t in itertools.product(*[[c * st for c in r]
                                                    for r, st in zip(ids, strides, strict=True)])]
        return InnerSlices(np.array(flat, dtype=np.int64), list(itertools.product(*csel)),
                           list(itertools.product(*osel)), tuple(shape), tuple(int_axes))
    grids = np.meshgrid(*[np.asarray(r, dtype=np.int64) for r in ids], indexing="ij")
    inner = np.ravel_multi_index([g.reshape(-1) for g in grids], layout.chunks_per_shard)
    return InnerSlices(np.asarray(inner, dtype=np.int64).reshape(-1),
                       list(itertools.product(*csel)), list(itertools.product(*osel)),
                       tuple(shape), tuple(int_axes))
