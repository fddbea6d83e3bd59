"""A process-wide cache of parsed shard indexes, bounded in bytes and keyed by file identity.

A window read touches a handful of inner chunks of a shard; without a cache every read first
reads (and parses) the shard's index, which costs as much as the chunks themselves. Entries are
keyed by the file's identity (path, device, inode, size, mtime_ns, ctime_ns) plus the index
layout, so a shard rewritten by anyone, in any process, is never read with a stale index: its
identity changes and the old entry simply stops matching (and ages out). The ctime is what
tells an in-place rewrite whose mtime was put back (``rsync --inplace -t``, ``cp -p``, tar)
from the original: ``utime`` cannot set it. What no key sees is written in
``GDSStore.file_identities``. Writes through ``GDSStore``
also drop the entries of the paths they replace, to free the memory at once.

The cache holds plain numpy arrays and knows nothing of files: callers stat the files
(``GDSStore.file_identities``) and read what is missing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from gds_zarr import settings

__all__ = ["CachedIndex", "ShardIndexCache", "shard_index_cache"]

#: (path, st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns, layout signature)
CacheKey = tuple[str, int, int, int, int, int, Any]


@dataclass(frozen=True, slots=True)
class CachedIndex:
    """One parsed shard index: uint64 ``offsets`` and ``nbytes``, bool ``empty`` (per inner
    chunk, C order), as :func:`gds_zarr.planning.shards.parse_indexes` returns them."""

    offsets: np.ndarray
    nbytes: np.ndarray
    empty: np.ndarray

    @property
    def cost(self) -> int:
        """Bytes the entry holds (its arrays plus a small fixed overhead)."""
        return int(self.offsets.nbytes + self.nbytes.nbytes + self.empty.nbytes) + 256


class ShardIndexCache:
    """A thread-safe LRU of :class:`CachedIndex`, bounded by the ``shard_index_cache_size``
    setting (read at every insert, so ``settings.set`` takes effect at once; 0 turns it off).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[CacheKey, CachedIndex] = OrderedDict()
        self._by_path: dict[str, set[CacheKey]] = {}
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def enabled() -> bool:
        """Whether the cache is on (``shard_index_cache_size`` > 0)."""
        return int(settings.get("shard_index_cache_size")) > 0

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, keys: list[CacheKey | None]) -> list[CachedIndex | None]:
        """The entry of each key (None for a miss or a None key), marking hits as recent."""
        out: list[CachedIndex | None] = []
        with self._lock:
            for k in keys:
                hit = None if k is None else self._entries.get(k)
                if hit is not None:
                    self._entries.move_to_end(k)  # type: ignore[arg-type]
                    self.hits += 1
                elif k is not None:
                    self.misses += 1
                out.append(hit)
        return out

    def put(self, key: CacheKey, entry: CachedIndex) -> None:
        """Insert ``entry`` and evict the least recently used entries beyond the bound."""
        limit = int(settings.get("shard_index_cache_size"))
        if limit <= 0 or entry.cost > limit:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.cost
            self._entries[key] = entry
            self._by_path.setdefault(key[0], set()).add(key)
            self._bytes += entry.cost
            while self._bytes > limit and self._entries:
                self._remove(next(iter(self._entries)))

    def drop_path(self, path: str) -> None:
        """Forget every entry of ``path`` (a write or delete replaced the file)."""
        with self._lock:
            for k in list(self._by_path.get(path, ())):
                self._remove(k)

    def drop_prefix(self, prefix: str) -> None:
        """Forget every entry whose path starts with ``prefix`` (a directory was removed)."""
        with self._lock:
            for p in [p for p in self._by_path if p.startswith(prefix)]:
                for k in list(self._by_path.get(p, ())):
                    self._remove(k)

    def clear(self) -> None:
        """Forget everything and reset the hit and miss counters."""
        with self._lock:
            self._entries.clear()
            self._by_path.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    def _remove(self, key: CacheKey) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.cost
        paths = self._by_path.get(key[0])
        if paths is not None:
            paths.discard(key)
            if not paths:
                del self._by_path[key[0]]


#: The process's cache, shared by every store and read path.
shard_index_cache = ShardIndexCache()
