"""One version of each shard per read, while other processes replace or rewrite shards.

A sharded read takes two passes over a shard: its index, then the inner chunks the index points
at. A writer that replaces the shard between them (``os.replace``, as zarr and ``GDSStore``
write) leaves the index of one version pointing into the bytes of another: a corrupt-looking
chunk, or wrong values where sizes happen to match. zarr reads a whole shard in one request, so
it never mixes versions; gds_zarr checks instead.

Every shard's identity (``GDSStore.file_identities``: inode, size, mtime and ctime) is taken
before a read and again after it. Equal identities mean no write touched the file in between:
every write changes the ctime, which ``utime`` cannot set back, and a replacement changes the
inode too. Shards whose identity changed are read again, each whole in one request as zarr
reads a shard (one open file, so one version however often it is replaced), and decoded from
memory by the same engine, a group at a time within the memory budget. If the first read failed
while a shard changed, every shard is read again so (the error may come from the mix, and may
have stopped the read before some shards). A shard rewritten in place (same inode) during each
of :data:`ATTEMPTS` reads raises :class:`~gds_zarr.errors.ShardChangedError`, never a
corruption error. A read that fails with no shard changed raises its own error: that is
corruption.

Stores that cannot tell identities (remote stores, stores other than ``GDSStore``) are read once:
what they guarantee is what their backend gives (an object store replaces objects whole, but an
index and its chunks are still two requests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
from zarr.core.buffer import cpu
from zarr.storage import MemoryStore

from gds_zarr import settings
from gds_zarr.errors import ChunkDecodeError, ChunkReadError, ShardChangedError
from gds_zarr.pipeline._stats import stats
from gds_zarr.pipeline._storeio import is_gds_store, read_ranges

__all__ = ["ATTEMPTS", "Versions", "file_versions", "read_one_version"]

#: Reads of one selection before a shard that keeps changing is reported.
ATTEMPTS = 4

#: Up to this many shards are stat'ed in the event loop's thread (a stat is a few microseconds;
#: a hop to a worker thread costs more).
_INLINE_STATS = 64

Versions = list[Any]
"""One identity per shard key (a tuple, or None for a missing file)."""


async def file_versions(store: Any, keys: Sequence[str]) -> Versions | None:
    """The identity of each key's file, or None where ``store`` cannot tell them."""
    if not is_gds_store(store):
        return None
    if len(keys) <= _INLINE_STATS:
        ids = store.file_identities(keys)
    else:
        ids = await asyncio.to_thread(store.file_identities, keys)
    # None for every key: a remote store (objects have no identity here), or no shard exists
    # yet; nothing to compare either way.
    return None if all(i is None for i in ids) else list(ids)


async def read_one_version(
        store: Any, keys: Sequence[str],
        read: Callable[[list[int] | None, Versions | None, Any], Awaitable[None]]) -> None:
    """Run ``read`` until it saw one version of every shard of ``keys``.

    Parameters
    ----------
    store
        The store the shards are read from.
    keys
        The shard keys the read touches.
    read
        ``read(only, versions, source)``: read the shards at positions ``only`` of ``keys``
        (None: all) from ``source``, writing only their output regions. ``source`` is ``store``,
        with ``versions`` the files' identities before the read (None: the store has none; the
        cache of parsed indexes keys on them), or, to read shards that changed during an
        earlier try, a zarr ``MemoryStore`` of those shards, each read whole in one request
        (``versions`` None).

    Raises
    ------
    ShardChangedError
        A shard changed during each of :data:`ATTEMPTS` reads.
    """
    before = await file_versions(store, keys)
    if before is None:
        await read(None, None, store)
        return
    error: ChunkDecodeError | ChunkReadError | None = None
    try:
        await read(None, before, store)
    except (ChunkDecodeError, ChunkReadError) as e:
        error = e
    after = await file_versions(store, keys) or [None] * len(keys)
    changed = [i for i in range(len(keys)) if after[i] != before[i]]
    if not changed:
        if error is not None:
            raise error
        return
    # Shards that changed are read again whole, each in one request as zarr reads a shard: one
    # version whatever a writer does. After an error, every shard is: the error may have
    # stopped the read before some were.
    only = list(range(len(keys))) if error is not None else changed
    torn = changed
    for _ in range(ATTEMPTS - 1):
        stats.add(version_rereads=1)
        before = await file_versions(store, keys) or [None] * len(keys)
        error = None
        try:
            await _read_whole(store, keys, only, before, read)
        except (ChunkDecodeError, ChunkReadError) as e:
            error = e
        after = await file_versions(store, keys) or [None] * len(keys)
        # A file read in one request is one version even if it was replaced meanwhile (the
        # open file is the old one): only a rewrite in place can have torn it.
        torn = [i for i in only if _rewritten_in_place(before[i], after[i])]
        if not torn:
            if error is not None:
                raise error
            return
        if error is None:
            only = torn
    raise ShardChangedError(keys[torn[0]], ATTEMPTS) from error


def _rewritten_in_place(before: Any, after: Any) -> bool:
    """The same file (device and inode: index 1, 2 of an identity), changed."""
    return (before is not None and after is not None and before[1:3] == after[1:3]
            and before != after)


async def _read_whole(store: Any, keys: Sequence[str], only: list[int], ids: Versions,
                      read: Callable[[list[int] | None, Versions | None, Any], Awaitable[None]]
                      ) -> None:
    """Read shards ``only`` whole, a group at a time within half the memory budget, and run
    ``read`` over each group from memory."""
    sizes = [0 if v is None else int(v[3]) for v in ids]  # st_size
    limit = int(settings.get("memory_budget")) // 2
    groups: list[list[int]] = [[]]
    total = 0
    for i in only:
        if groups[-1] and total + sizes[i] > limit:  # a shard over the limit goes alone
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += sizes[i]
    for group in groups:
        batch = await read_ranges(store, [keys[j] for j in group],
                                  np.zeros(len(group), np.int64),
                                  np.full(len(group), -1, np.int64), "cpu")
        data = batch.data
        mem = MemoryStore({keys[j]: cpu.Buffer.from_array_like(data[o:o + n])
                           for j, o, n, p in zip(group, batch.offsets.tolist(),
                                                 batch.sizes.tolist(), batch.present.tolist(),
                                                 strict=True) if p})
        await read(group, None, mem)
