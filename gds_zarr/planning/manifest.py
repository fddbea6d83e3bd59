"""Chunk keys of a virtual array -> byte ranges of the files its manifest names: pure numpy.

A VirtualiZarr manifest (``ChunkManifest``) holds, for every chunk of an array's grid, the file
(a path or URL; ``""`` for a chunk that is not stored, the array's fill value), the byte offset
and the length of the chunk's bytes in it, as three grid-shaped numpy arrays. A batch of zarr
reads is a list of chunk keys and byte requests (encoded as in ``gds_zarr/io/_base.py``); here
that batch becomes one request per key against the file itself: which distinct file, and the
absolute ``[start, stop)`` in it, without a Python object per chunk:

* :func:`parse_chunk_keys` turns the keys into grid coordinates with one join, one regular
  expression and one ``numpy.fromstring`` over the batch;
* :func:`resolve_requests` gathers paths, offsets and lengths at those coordinates, numbers the
  distinct files (``numpy.unique`` over the string array) and clamps each request to its chunk.

Nothing here reads a file or knows a store: ``gds_zarr/store/_manifest.py`` does that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["INLINED", "MISSING", "ManifestRequests", "clamp_requests", "grid_coords",
           "parse_chunk_keys", "resolve_requests"]

#: VirtualiZarr's path sentinels: a chunk that is not stored, a chunk held in the manifest.
MISSING = ""
INLINED = "__inlined__"

# A chunk index: at most 18 digits, so numpy's int64 parse cannot overflow.
_INDEX = r"\d{1,18}"


def parse_chunk_keys(keys: Sequence[str], prefix: str, separator: str,
                     grid_shape: tuple[int, ...]) -> np.ndarray | None:
    """The flat grid index of every chunk key, or None if any key is not a chunk of the grid.

    Parameters
    ----------
    keys
        Store keys, e.g. ``"t2m/c/3/4"``.
    prefix
        What every key of this array starts with before its indices (``"t2m/c/"`` for zarr v3's
        default encoding with ``"/"``, ``"t2m/"`` for the v2 encoding).
    separator
        Between the indices (``"/"`` or ``"."``).
    grid_shape
        The manifest's chunk grid shape (``()`` for a 0-d array: its one chunk's key is then
        ``prefix`` itself, e.g. ``"t2m/c"``).

    Returns
    -------
    numpy.ndarray or None
        int64 flat indices into the C-ordered grid; None when a key does not have the form, or
        an index lies outside the grid (the caller then reads key by key, as the store does).
    """
    n = len(keys)
    ndim = len(grid_shape)
    if ndim == 0:
        return np.zeros(n, np.int64) if all(k == prefix for k in keys) else None
    if n == 0:
        return np.zeros(0, np.int64)
    cut = len(prefix)
    if not all(k.startswith(prefix) for k in keys):
        return None
    body = "\n".join([k[cut:] for k in keys])
    one = _INDEX + (re.escape(separator) + _INDEX) * (ndim - 1)
    if re.fullmatch(f"{one}(?:\n{one})*", body) is None:
        return None
    # One C parse of the whole batch: no Python int or str per index.
    parsed = np.fromstring(body.replace(separator, " ").replace("\n", " "), dtype=np.int64,
                           sep=" ")
    if parsed.size != n * ndim:
        return None
    coords = parsed.reshape(n, ndim)
    if (coords >= np.asarray(grid_shape, np.int64)).any():
        return None
    return np.asarray(np.ravel_multi_index(tuple(coords.T), grid_shape), np.int64)


def clamp_requests(starts: np.ndarray, stops: np.ndarray,
                   lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encoded requests (``gds_zarr/io/_base.py``) against values of ``lengths`` bytes, clamped
    as zarr's LocalStore clamps (a range past the end stops there, a suffix longer than the value
    is all of it).

    Returns
    -------
    tuple of numpy.ndarray
        ``(lo, hi)`` with ``0 <= lo <= hi <= lengths``, relative to each value.
    """
    starts = np.asarray(starts, np.int64)
    stops = np.asarray(stops, np.int64)
    lengths = np.asarray(lengths, np.int64)
    lo = np.where(starts < 0, np.maximum(lengths + starts, 0), np.minimum(starts, lengths))
    hi = np.where(stops < 0, lengths, np.minimum(stops, lengths))
    return lo, np.maximum(hi, lo)


@dataclass(frozen=True, slots=True)
class ManifestRequests:
    """One batch of chunk requests resolved against a manifest.

    Attributes
    ----------
    files
        The distinct paths or URLs the batch names (sentinels :data:`MISSING` and
        :data:`INLINED` included when present).
    file_of
        int64 per request: its index into ``files``.
    starts, stops
        int64 per request: absolute byte range in its file (for an inlined chunk: in its bytes).
    missing, inlined
        bool per request: the chunk is not stored (its fill value), or held in the manifest.
    flat
        int64 per request: the chunk's flat grid index (for inlined chunks and messages).
    """

    files: list[str]
    file_of: np.ndarray
    starts: np.ndarray
    stops: np.ndarray
    missing: np.ndarray
    inlined: np.ndarray
    flat: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        """Bytes each request must read (its range within the chunk)."""
        return np.asarray(self.stops - self.starts, np.int64)


def resolve_requests(paths: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                     flat: np.ndarray, starts: np.ndarray, stops: np.ndarray
                     ) -> ManifestRequests:
    """Resolve requests of chunks ``flat`` against a manifest's arrays.

    Parameters
    ----------
    paths, offsets, lengths
        The manifest's grid-shaped arrays (numpy ``StringDType`` paths, uint64 offsets and
        lengths), any shape: read flat in C order.
    flat
        int64 flat grid index of each request's chunk (:func:`parse_chunk_keys`).
    starts, stops
        Encoded byte requests relative to each chunk (``gds_zarr/io/_base.py``).

    Returns
    -------
    ManifestRequests
    """
    flat = np.asarray(flat, np.int64)
    chosen = paths.reshape(-1)[flat]
    base = offsets.reshape(-1)[flat].astype(np.int64)
    length = lengths.reshape(-1)[flat].astype(np.int64)
    distinct, file_of = np.unique(chosen, return_inverse=True)
    files: list[str] = [str(f) for f in distinct.tolist()]  # a few files, not one per chunk
    file_of = np.asarray(file_of, np.int64).reshape(-1)
    missing = _is(files, file_of, MISSING)
    inlined = _is(files, file_of, INLINED)
    length = np.where(missing, 0, length)
    lo, hi = clamp_requests(starts, stops, length)
    shift = np.where(inlined | missing, 0, base)
    return ManifestRequests(files, file_of, lo + shift, hi + shift, missing, inlined, flat)


def _is(files: list[str], file_of: np.ndarray, value: str) -> np.ndarray:
    """bool per request: its file is ``value``."""
    try:
        return np.asarray(file_of == files.index(value), bool)
    except ValueError:
        return np.zeros(len(file_of), bool)


def grid_coords(flat: int, grid_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The grid coordinates of flat index ``flat`` (the key of VirtualiZarr's inlined bytes)."""
    return tuple(int(i) for i in np.unravel_index(int(flat), grid_shape)) if grid_shape else ()
