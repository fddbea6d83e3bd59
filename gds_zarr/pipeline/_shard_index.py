"""Shard indexes for a read: from the process's cache where the file is unchanged, the rest read
in ONE batched store call and parsed together (every read path goes through here).

The files' identities come from the caller (:func:`gds_zarr.pipeline._versions.file_versions`,
taken once per read): the same ones tell whether a shard changed while it was read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gds_zarr.pipeline._stats import stats
from gds_zarr.pipeline._storeio import read_ranges, timed
from gds_zarr.planning.index_cache import CachedIndex, shard_index_cache
from gds_zarr.planning.shards import ShardLayout, index_request, parse_indexes

__all__ = ["read_shard_indexes"]

async def read_shard_indexes(store: Any, keys: Sequence[str], layout: ShardLayout,
                             versions: Sequence[Any] | None
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The parsed indexes of shards ``keys``.

    ``versions``: each file's identity now (``GDSStore.file_identities``), or None where the
    store has none; cached indexes are used only for identical files.

    Returns
    -------
    offsets, nbytes : numpy.ndarray
        uint64 ``(n_shards, n_inner)``.
    empty : numpy.ndarray
        bool ``(n_shards, n_inner)``: empty inner chunks (every chunk of a missing shard).
    present : numpy.ndarray
        bool ``(n_shards,)``: the shard exists.

    Raises
    ------
    ShardIndexError
        A shard whose index is truncated, fails its crc32c or holds absurd entries.
    """
    n = len(keys)
    n_inner = int(np.prod(layout.chunks_per_shard, dtype=np.int64))
    cache_keys: list[Any] = [None] * n
    hits: list[CachedIndex | None] = [None] * n
    if versions is not None and shard_index_cache.enabled():
        sig = (layout.index_location, layout.index_crc32c, layout.chunks_per_shard)
        cache_keys = [None if i is None else (*i, sig) for i in versions]
        hits = shard_index_cache.get_many(cache_keys)
    need = [i for i in range(n) if hits[i] is None]
    if n and not need:  # every index cached (repeated small reads): nothing to read
        if n == 1:  # one shard (a small read): views, not np.stack's copies; callers only read
            h = hits[0]
            assert h is not None
            return h.offsets[None], h.nbytes[None], h.empty[None], np.array([True])
        return (np.stack([h.offsets for h in hits]), np.stack([h.nbytes for h in hits]),
                np.stack([h.empty for h in hits]), np.ones(n, dtype=bool))
    if len(need) == n:  # nothing cached: the common cold case needs no merging
        offsets, nbytes, empty, present = await _read_parse(store, list(keys), layout)
        _remember(cache_keys, range(n), offsets, nbytes, empty, present)
        return offsets, nbytes, empty, present
    offsets = np.empty((n, n_inner), dtype=np.uint64)
    nbytes = np.empty((n, n_inner), dtype=np.uint64)
    empty = np.empty((n, n_inner), dtype=bool)
    present = np.ones(n, dtype=bool)
    for i, h in enumerate(hits):
        if h is not None:
            offsets[i], nbytes[i], empty[i] = h.offsets, h.nbytes, h.empty
    if need:
        o, b, e, p = await _read_parse(store, [keys[i] for i in need], layout)
        offsets[need], nbytes[need], empty[need], present[need] = o, b, e, p
        _remember(cache_keys, need, o, b, e, p)
    return offsets, nbytes, empty, present


async def _read_parse(store: Any, keys: list[str], layout: ShardLayout
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(keys)
    start, stop = index_request(layout)
    # The hint (the index's size) lets the store read one index per shard in a single pass.
    idx = await timed(read_ranges(store, keys, np.full(n, start, np.int64),
                                  np.full(n, stop, np.int64), "cpu", layout.index_nbytes))
    stats.add(store_reads=1)
    offsets, nbytes, empty = parse_indexes(idx, keys, layout)
    return offsets, nbytes, empty, np.asarray(idx.present, dtype=bool)


def _remember(cache_keys: list[Any], rows: Sequence[int], offsets: np.ndarray,
              nbytes: np.ndarray, empty: np.ndarray, present: np.ndarray) -> None:
    for j, i in enumerate(rows):
        k = cache_keys[i]
        if k is not None and present[j]:
            # Copies: the cache must not pin the whole batch's arrays through row views.
            shard_index_cache.put(k, CachedIndex(offsets[j].copy(), nbytes[j].copy(),
                                                 empty[j].copy()))
