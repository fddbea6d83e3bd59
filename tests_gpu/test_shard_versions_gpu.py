"""A read onto the device sees one version of each shard while another writer replaces it:
the GPU twin of tests/test_shard_versions.py (kvikio reads, nvCOMP decode, the scatter kernel;
shards that changed are read again whole, from host memory)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gds_zarr._device import gpu_status

pytestmark = pytest.mark.gpu

if not gpu_status().usable:
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)

import cupy as cp
import zarr
from shard_versions_cases import (
    AfterRead,
    open_array,
    replace_after_index_read,
    reversed_shard,
    sharded,
)

import gds_zarr
from gds_zarr.errors import ShardChangedError
from gds_zarr.pipeline._stats import stats
from gds_zarr.planning.index_cache import shard_index_cache


@pytest.fixture(autouse=True)
def _reset() -> Any:
    shard_index_cache.clear()
    AfterRead.hook, AfterRead.calls = None, 0
    with gds_zarr.enable(device="gpu"):
        yield
    AfterRead.hook, AfterRead.calls = None, 0
    shard_index_cache.clear()


@pytest.mark.parametrize("compressors", [None, "zstd"])
@pytest.mark.parametrize("selection", [np.s_[...], np.s_[3:30, 5:64]])
def test_replacement_between_index_and_chunks(tmp_path: Path, compressors: Any,
                                              selection: Any) -> None:
    path = tmp_path / "a.zarr"
    data = np.random.default_rng(0).integers(0, 1 << 20, (64, 64)).astype("i4")
    sharded(path, data, None if compressors is None else zarr.codecs.ZstdCodec(level=1))
    replace_after_index_read(path / "c" / "0" / "0")
    z = open_array(AfterRead(path, read_only=True))
    before = stats.version_rereads
    got = z[selection]
    assert isinstance(got, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(got), data[selection])
    assert stats.version_rereads == before + 1


def test_replacement_between_index_and_chunks_read_many(tmp_path: Path) -> None:
    path = tmp_path / "a.zarr"
    data = np.arange(64 * 64, dtype="i4").reshape(64, 64)
    sharded(path, data)
    replace_after_index_read(path / "c" / "0" / "0")
    z = open_array(AfterRead(path, read_only=True))
    sels = [np.s_[0:16, 0:16], np.s_[8:24, 20:36], np.s_[40:56, 0:16]]
    got = gds_zarr.read_many(z, sels, device="gpu")
    for s, g in zip(sels, got, strict=True):
        np.testing.assert_array_equal(cp.asnumpy(g), data[s])


def test_a_shard_rewritten_in_place_on_every_read_raises_changed(tmp_path: Path) -> None:
    path = tmp_path / "a.zarr"
    sharded(path, np.arange(64 * 64, dtype="i4").reshape(64, 64))
    shard = path / "c" / "1" / "1"
    content = shard.read_bytes()
    assert reversed_shard(content) != content  # the shard has several inner chunks

    def hook(call: int) -> None:
        time.sleep(0.02)  # past the file clock's tick: the write gets a new ctime
        with open(shard, "r+b") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())

    AfterRead.hook = hook
    z = open_array(AfterRead(path, read_only=True))
    with pytest.raises(ShardChangedError, match="changed during the read"):
        z[...]


@pytest.mark.parametrize("kind", ["array", "read_many"])
def test_reads_while_another_process_replaces_shards(kind: str) -> None:
    """A real writer process swaps every shard between two versions; every read onto the
    device succeeds and gives one version of each shard."""
    from benchmarks.replacement import run

    r = run(10, engine="gds_zarr", kind=kind, min_swaps=32, device="gpu")
    assert r["swaps"] >= 32, r
    assert (r["failed"], r["wrong"]) == (0, 0), r
