"""Shared by tests/test_shard_versions.py and tests_gpu/test_shard_versions_gpu.py: sharded
arrays, and a store whose batched reads let another writer act at a known moment."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

from gds_zarr.pipeline import PIPELINE_PATH
from gds_zarr.store import GDSStore

DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"
N_INNER = 16  # (32, 32) shards of (8, 8) chunks


class AfterRead(GDSStore):
    """A GDSStore that runs ``hook(call_number)`` after each batched read returns: another
    writer acting between a shard's index read and its chunk read, at a known moment."""

    hook: Callable[[int], None] | None = None
    calls = 0

    def read_batch(self, *args: Any, **kwargs: Any) -> Any:
        out = super().read_batch(*args, **kwargs)
        type(self).calls += 1
        if type(self).hook is not None:
            type(self).hook(type(self).calls)
        return out


def sharded(path: Path, data: np.ndarray, compressors: Any = None) -> None:
    with warnings.catch_warnings(), zarr.config.set({"codec_pipeline.path": DEFAULT}):
        warnings.simplefilter("ignore")
        z = zarr.create_array(LocalStore(path), shape=data.shape, dtype=data.dtype,
                              chunks=(8, 8), shards=(32, 32), compressors=compressors,
                              overwrite=True)
        z[...] = data


def open_array(store: GDSStore) -> Any:
    with zarr.config.set({"codec_pipeline.path": PIPELINE_PATH}):
        return zarr.open_array(store, mode="r")


def reversed_shard(shard: bytes, n_inner: int = N_INNER) -> bytes:
    """The same shard with its inner chunks stored in reverse order: same size and values,
    another index (uint64 offset and size per chunk, then CRC-32C, at the end). Read with the
    old index, uncompressed chunks land in each other's places: wrong values, silently."""
    import google_crc32c

    index_len = 16 * n_inner + 4
    index = np.frombuffer(shard[-index_len:-4], "<u8").reshape(n_inner, 2)
    body = bytearray()
    new = np.zeros_like(index)
    for i in reversed(range(n_inner)):
        off, size = int(index[i, 0]), int(index[i, 1])
        new[i] = (len(body), size)
        body += shard[off: off + size]
    table = new.astype("<u8").tobytes()
    out = bytes(body) + table + google_crc32c.value(table).to_bytes(4, "little")
    assert len(out) == len(shard)
    return out


def replace_after_index_read(shard: Path, replacement: bytes | None = None) -> None:
    """After the first batched read (the shard indexes), replace ``shard`` atomically, as
    ``GDSStore.set`` and zarr's LocalStore write, with ``replacement`` (default: the same
    shard with its chunks in reverse order)."""
    new = reversed_shard(shard.read_bytes()) if replacement is None else replacement

    def hook(call: int) -> None:
        if call == 1:
            tmp = shard.with_name("swap.tmp")
            tmp.write_bytes(new)
            os.replace(tmp, shard)

    AfterRead.hook = hook
