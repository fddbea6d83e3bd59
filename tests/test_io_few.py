"""The CPU backend's path for a few bounded ranges (io/_cpu.py ``_read_few``) answers exactly
as its general paths do, refuses what they refuse, and hands them every case it does not take."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gds_zarr.errors import ChunkReadError, InvalidKeyError
from gds_zarr.io._cpu import _FEW_REQUESTS, _RWF_NOWAIT, PosixIOBackend
from gds_zarr.store import GDSStore


def _answers(store: GDSStore, keys: list[str], ranges: list[tuple[int, int]]
             ) -> list[bytes | None]:
    got = store.read_batch(keys, np.array([a for a, _ in ranges], np.int64),
                           np.array([b for _, b in ranges], np.int64), device="cpu")
    return [bytes(got.view(i)) if got.present[i] else None for i in range(len(keys))]


def test_few_ranges_equal_the_general_path(store: GDSStore) -> None:
    (store.root / "c").mkdir(parents=True)
    (store.root / "c" / "a").write_bytes(bytes(range(100)))
    (store.root / "c" / "b").write_bytes(b"xyz")
    keys = ["c/a", "c/a", "c/b", "c/missing", "c/b", "c/a"]
    ranges = [(0, 10), (95, 120), (1, 2), (0, 5), (7, 9), (50, 50)]  # past EOF, empty
    few = _answers(store, keys, ranges)
    assert few == [bytes(range(10)), bytes(range(95, 100)), b"y", None, b"", b""]
    stats = store.io_stats()
    assert stats.files_opened == 2 and stats.requests == 6  # each file opened once
    # The same requests in a batch too large for the few path: the same answers.
    many = -(-(_FEW_REQUESTS + 1) // len(keys))
    general = _answers(store, keys * many, ranges * many)
    assert general == few * many


def test_few_path_refuses_what_the_general_path_refuses(store: GDSStore) -> None:
    (store.root / "c" / "d").mkdir(parents=True)
    (store.root / "c" / "ok").write_bytes(b"abc")
    with pytest.raises(ChunkReadError, match="directory"):
        _answers(store, ["c/ok", "c/d"], [(0, 2), (0, 2)])
    os.mkfifo(store.root / "c" / "fifo")
    with pytest.raises(ChunkReadError, match="regular file"):
        _answers(store, ["c/fifo"], [(0, 2)])
    os.symlink(store.root / "c" / "ok", store.root / "c" / "alias")
    assert _answers(store, ["c/alias"], [(1, 3)]) == [b"bc"]
    outside = store.root.parent / "outside"
    outside.write_bytes(b"secret")
    os.symlink(outside, store.root / "c" / "leak")
    with pytest.raises(InvalidKeyError):
        _answers(store, ["c/leak"], [(0, 3)])


def test_open_ended_and_large_requests_take_the_general_path(tmp_path: Path) -> None:
    store = GDSStore(tmp_path / "s")
    (store.root / "c").mkdir(parents=True)
    (store.root / "c" / "a").write_bytes(b"0123456789")
    # Suffix and open-ended requests need the file's size: answered as always.
    got = store.read_batch(["c/a", "c/a"], np.array([-3, 4]), np.array([-1, -1]), device="cpu")
    assert [bytes(got.view(i)) for i in range(2)] == [b"789", b"456789"]
    # A range claiming a terabyte (a corrupt shard index) is clamped by the file's size, never
    # allocated.
    got = store.read_batch(["c/a"], np.array([2]), np.array([1 << 40]), device="cpu")
    assert bytes(got.view(0)) == b"23456789" and got.data.nbytes < 1 << 20


def test_uncached_ranges_take_the_general_path(store: GDSStore) -> None:
    from benchmarks.datasets import drop_page_cache

    (store.root / "c").mkdir(parents=True)
    payload = os.urandom(1 << 20)
    (store.root / "c" / "a").write_bytes(payload)
    path = str(store.root / "c" / "a")
    backend = PosixIOBackend()
    starts, stops = np.array([0, 600_000]), np.array([100, 700_000])
    drop_page_cache([store.root / "c" / "a"])
    if _RWF_NOWAIT:  # without RWF_NOWAIT (old kernels) the few path reads cold files itself
        assert backend._read_few([path, path], starts, stops, None) is None
    got = _answers(store, ["c/a", "c/a"], [(0, 100), (600_000, 700_000)])
    assert got == [payload[:100], payload[600_000:700_000]]
    # Now cached: the few path answers.
    few = backend._read_few([path, path], starts, stops, None)
    assert few is not None and bytes(few.view(1)) == payload[600_000:700_000]
