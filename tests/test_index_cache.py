"""The shard-index cache: bounded in bytes, keyed by file identity, dropped by writes, off by a
setting; a shard rewritten by another process is never read with its old index."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from shard_versions_cases import reversed_shard
from zarr.storage import LocalStore

from gds_zarr import settings
from gds_zarr.pipeline import PIPELINE_PATH
from gds_zarr.planning.index_cache import CachedIndex, ShardIndexCache, shard_index_cache
from gds_zarr.store import GDSStore

DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"


def _sharded(path: Path, data: np.ndarray) -> None:
    with warnings.catch_warnings(), zarr.config.set({"codec_pipeline.path": DEFAULT}):
        warnings.simplefilter("ignore")
        z = zarr.create_array(LocalStore(path), shape=data.shape, dtype=data.dtype,
                              chunks=(8, 8), shards=(32, 32), overwrite=True)
        z[...] = data


def _open(store: GDSStore) -> Any:
    with zarr.config.set({"codec_pipeline.path": PIPELINE_PATH}):
        return zarr.open_array(store, mode="r")


@pytest.fixture(autouse=True)
def _clean_cache() -> Any:
    shard_index_cache.clear()
    yield
    shard_index_cache.clear()


def _entry(n: int) -> CachedIndex:
    return CachedIndex(np.zeros(n, np.uint64), np.zeros(n, np.uint64), np.zeros(n, bool))


def test_lru_bounded_in_bytes() -> None:
    cache = ShardIndexCache()
    one = _entry(100).cost
    with settings.set(shard_index_cache_size=3 * one):
        for i in range(5):
            cache.put((f"/p{i}", 0, i, 1, 1, None), _entry(100))
        assert len(cache) == 3 and cache.nbytes == 3 * one
        # The two oldest went; a hit makes an entry recent, so the next insert evicts p3.
        got = cache.get_many([("/p0", 0, 0, 1, 1, None), ("/p2", 0, 2, 1, 1, None)])
        assert got[0] is None and got[1] is not None
        cache.put(("/p5", 0, 5, 1, 1, None), _entry(100))
        assert cache.get_many([("/p3", 0, 3, 1, 1, None)]) == [None]
        assert cache.get_many([("/p2", 0, 2, 1, 1, None)])[0] is not None
        cache.drop_prefix("/p")
        assert len(cache) == 0 and cache.nbytes == 0
    with settings.set(shard_index_cache_size=0):
        cache.put(("/x", 0, 0, 1, 1, None), _entry(1))
        assert len(cache) == 0 and not cache.enabled()


def test_second_read_skips_the_index(tmp_path: Path) -> None:
    data = np.arange(64 * 64, dtype="f4").reshape(64, 64)
    _sharded(tmp_path / "a.zarr", data)
    store = GDSStore(tmp_path / "a.zarr", read_only=True)
    z = _open(store)
    np.testing.assert_array_equal(z[3:20, 40:50], data[3:20, 40:50])
    assert len(shard_index_cache) == 1  # one shard: rows 0-31, columns 32-63
    stats = store.io_stats()
    before = stats.requests
    np.testing.assert_array_equal(z[3:20, 40:50], data[3:20, 40:50])
    # Only the inner chunks are requested now (3 x 2 of them), no index.
    assert stats.requests - before == 6
    assert shard_index_cache.hits == 1


def test_setting_turns_it_off(tmp_path: Path) -> None:
    data = np.arange(64 * 64, dtype="i4").reshape(64, 64)
    _sharded(tmp_path / "a.zarr", data)
    store = GDSStore(tmp_path / "a.zarr", read_only=True)
    with settings.set(shard_index_cache_size=0):
        z = _open(store)
        np.testing.assert_array_equal(z[...], data)
        before = store.io_stats().requests
        np.testing.assert_array_equal(z[0, 0], data[0, 0])
        assert store.io_stats().requests - before == 2  # the index, then the chunk
    assert len(shard_index_cache) == 0


def test_rewrite_by_another_process_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "a.zarr"
    data = np.arange(64 * 64, dtype="i4").reshape(64, 64)
    _sharded(path, data)
    z = _open(GDSStore(path, read_only=True))
    np.testing.assert_array_equal(z[...], data)
    assert len(shard_index_cache) == 4
    # Another process rewrites shard (0, 0) with zarr alone; its index changes (a missing inner
    # chunk, other sizes) and so does the file's identity.
    script = textwrap.dedent(f"""
        import numpy as np, zarr
        from zarr.storage import LocalStore
        z = zarr.open_array(LocalStore({str(path)!r}), mode="r+")
        block = np.arange(32 * 32, dtype="i4").reshape(32, 32) * 7 + 1
        block[:8, :8] = 0  # the fill value: that inner chunk is not written
        z[:32, :32] = block
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    expected = data.copy()
    expected[:32, :32] = np.arange(32 * 32, dtype="i4").reshape(32, 32) * 7 + 1
    expected[:8, :8] = 0
    np.testing.assert_array_equal(z[...], expected)
    np.testing.assert_array_equal(z[0:9, 5:12], expected[0:9, 5:12])


def test_rewrite_in_place_with_mtime_restored_is_seen(tmp_path: Path) -> None:
    """What ``rsync --inplace -t``, ``cp -p`` and tar do: same inode, same size, the old mtime.
    Only ``st_ctime_ns`` (which ``utime`` cannot set back) tells the versions apart."""
    path = tmp_path / "a.zarr"
    data = np.arange(64 * 64, dtype="i4").reshape(64, 64)
    data[:32, :32] = np.random.default_rng(0).integers(0, 1 << 20, (32, 32))  # sizes differ
    _sharded(path, data)
    shard = path / "c" / "0" / "0"
    # The new version holds the same values in another layout: read with the old index, its
    # offsets point into other chunks.
    replacement = reversed_shard(shard.read_bytes(), 16)
    z = _open(GDSStore(path, read_only=True))
    np.testing.assert_array_equal(z[...], data)
    assert len(shard_index_cache) == 4
    (tmp_path / "replacement").write_bytes(replacement)
    script = textwrap.dedent(f"""
        import os
        st = os.stat({str(shard)!r})
        with open({str(shard)!r}, "r+b") as f:
            f.write(open({str(tmp_path / "replacement")!r}, "rb").read())
        os.utime({str(shard)!r}, ns=(st.st_atime_ns, st.st_mtime_ns))
        after = os.stat({str(shard)!r})
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
            st.st_ino, st.st_size, st.st_mtime_ns)
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_array_equal(z[...], data)
    np.testing.assert_array_equal(z[0:9, 5:12], data[0:9, 5:12])


def test_writes_through_the_store_drop_entries(tmp_path: Path) -> None:
    path = tmp_path / "a.zarr"
    data = np.arange(64 * 64, dtype="i4").reshape(64, 64)
    _sharded(path, data)
    store = GDSStore(path)
    with zarr.config.set({"codec_pipeline.path": PIPELINE_PATH}):
        z = zarr.open_array(store, mode="r+")
        np.testing.assert_array_equal(z[...], data)
        assert len(shard_index_cache) == 4
        z[0:4, 0:4] = -1  # rewrites shard c/0/0 through GDSStore.set
        assert len(shard_index_cache) == 3
        data[0:4, 0:4] = -1
        np.testing.assert_array_equal(z[...], data)
        assert len(shard_index_cache) == 4
        store.delete_sync("c/0/1")
        assert len(shard_index_cache) == 3
