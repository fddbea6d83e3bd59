"""GDSStore beyond the conformance suite: batching, LocalStore parity, errors, safety."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import cpu, default_buffer_prototype
from zarr.storage import LocalStore

from gds_zarr.errors import ChunkReadError, InvalidKeyError, ReadOnlyError
from gds_zarr.io import BatchRead, batch_from_buffers
from gds_zarr.store import GDSStore

PROTO = default_buffer_prototype()


def _buf(data: bytes) -> cpu.Buffer:
    return cpu.Buffer.from_bytes(data)


def _write(root: Path, key: str, data: bytes) -> None:
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    (root / key).write_bytes(data)


def _bytes(bufs: list) -> list[bytes | None]:
    return [None if b is None else b.to_bytes() for b in bufs]


def _count_backend_calls(store: GDSStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    backend = store._backend("cpu")
    calls: list[int] = []
    real = backend.read_batch

    def counting(paths, *args, **kwargs):  # the real read, counted
        calls.append(len(paths))
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(backend, "read_batch", counting)
    return calls


# ---------------------------------------------------------------- batching


async def test_many_small_files_are_one_backend_call(
    store: GDSStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    payloads = {f"c/{i // 64}/{i % 64}": rng.bytes(1024) for i in range(4096)}
    for key, data in payloads.items():
        _write(store.root, key, data)
    calls = _count_backend_calls(store, monkeypatch)
    got = await store.get_partial_values(PROTO, [(k, None) for k in payloads])
    assert calls == [4096]
    assert _bytes(got) == list(payloads.values())
    stats = store.io_stats()
    assert (stats.files_opened, stats.reads, stats.requests) == (4096, 4096, 4096)
    assert stats.bytes_read == 4096 * 1024


async def test_many_ranges_of_one_file_coalesce(store: GDSStore) -> None:
    data = np.random.default_rng(1).bytes(4 << 20)
    _write(store.root, "shard", data)
    ranges = [RangeByteRequest(o, o + 1000) for o in range(0, 4 << 20, 4096)]  # 1024 ranges
    got = await store.get_partial_values(PROTO, [("shard", r) for r in ranges])
    assert _bytes(got) == [data[r.start : r.end] for r in ranges]
    assert store.io_stats().reads <= 2  # 4 MiB at most 16 MiB a read, gaps of 3 KiB
    store.io_stats().reset()
    pairs = [p async for batch in store.get_ranges("shard", ranges, prototype=PROTO,
                                                   max_gap_bytes=0) for p in batch]
    assert store.io_stats().reads == len(ranges)  # gaps > 0 bytes: nothing merges
    assert [b.to_bytes() for _, b in sorted(pairs, key=lambda p: p[0])] == _bytes(got)


def test_get_ranges_sync_matches_get(store: GDSStore) -> None:
    _write(store.root, "k", bytes(range(200)))
    reqs = [RangeByteRequest(5, 50), None, SuffixByteRequest(7), OffsetByteRequest(190)]
    got = dict(store.get_ranges_sync("k", reqs, prototype=PROTO))
    for i, r in enumerate(reqs):
        assert got[i].to_bytes() == store.get_sync("k", byte_range=r).to_bytes()


# ---------------------------------------------------------------- parity with LocalStore

RANGES = [None, RangeByteRequest(0, 0), RangeByteRequest(2, 5), RangeByteRequest(3, 100),
          RangeByteRequest(50, 60), OffsetByteRequest(0), OffsetByteRequest(4),
          OffsetByteRequest(100), SuffixByteRequest(0), SuffixByteRequest(3),
          SuffixByteRequest(100)]


@pytest.mark.parametrize("size", [0, 1, 10])
async def test_byte_requests_match_localstore(tmp_path: Path, size: int) -> None:
    _write(tmp_path, "k", bytes(range(size)))
    ours, theirs = GDSStore(tmp_path), LocalStore(tmp_path)
    pairs = [("k", r) for r in RANGES]
    want = _bytes(await theirs.get_partial_values(PROTO, pairs))
    assert _bytes(await ours.get_partial_values(PROTO, pairs)) == want
    for r, w in zip(RANGES, want, strict=True):
        assert (await ours.get("k", PROTO, r)).to_bytes() == w
        assert ours.get_sync("k", byte_range=r).to_bytes() == w


async def test_open_array_matches_localstore(tmp_path: Path) -> None:
    data = np.arange(60 * 70, dtype="float32").reshape(60, 70)
    a = zarr.create_array(LocalStore(tmp_path / "a.zarr"), shape=data.shape, chunks=(16, 16),
                          dtype=data.dtype, fill_value=-1)
    a[:, :50] = data[:, :50]  # leaves some chunks missing: fill value
    want = zarr.open_array(LocalStore(tmp_path / "a.zarr"), mode="r")[...]
    got = zarr.open_array(GDSStore(tmp_path / "a.zarr", read_only=True), mode="r")[...]
    np.testing.assert_array_equal(got, want)
    assert (got[:, 64:] == -1).all()
    # and writing through GDSStore gives what LocalStore reads
    b = zarr.create_array(GDSStore(tmp_path / "b.zarr"), shape=data.shape, chunks=(16, 16),
                          dtype=data.dtype, shards=(32, 32))
    b[...] = data
    np.testing.assert_array_equal(zarr.open_array(LocalStore(tmp_path / "b.zarr"))[...], data)
    np.testing.assert_array_equal(zarr.open_array(GDSStore(tmp_path / "b.zarr"))[12:40, 3:61],
                                  data[12:40, 3:61])


# ---------------------------------------------------------------- one-pass reads (size_hint)


def _requests(batch: BatchRead) -> list[bytes | None]:
    return [batch.view(i).tobytes() if batch.present[i] else None for i in range(len(batch))]


@pytest.mark.parametrize("hint", [0, 3, 10, 64, 200])
def test_size_hint_changes_nothing_but_speed(store: GDSStore, hint: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """One request per file (the one-pass path) gives exactly what the two-phase path gives,
    whether files fit their slot, fill it exactly or overflow it (then they alone take the
    two-phase path)."""
    from gds_zarr.store._store import _encode_many

    sizes = (0, 1, 10, 100)
    # Bounded ranges and suffixes longer than the hint send the whole batch to the two-phase
    # path; leave them out so that every batch here takes the one-pass path.
    ranges = [r for r in RANGES
              if not (isinstance(r, RangeByteRequest) and r.end - r.start > hint)
              and not (isinstance(r, SuffixByteRequest) and r.suffix > hint)]
    keys, reqs = [], []
    for size in sizes:
        for i, r in enumerate(ranges):
            keys.append(f"f{size}-{i}")
            reqs.append(r)
            _write(store.root, keys[-1], bytes(range(size)))
    keys += ["missing", "also/missing"]
    reqs += [None, OffsetByteRequest(1)]
    starts, stops = _encode_many(reqs)
    want = _requests(store.read_batch(keys, starts, stops, device="cpu"))
    assert want[len(ranges) * 3] == bytes(range(100))  # the two-phase reference is right
    backend = store._backend("cpu")
    phased: list[int] = []
    real = backend._read_phased

    def counting(files, *args, **kwargs):  # the real two-phase read, counted
        phased.append(len(files))
        return real(files, *args, **kwargs)

    monkeypatch.setattr(backend, "_read_phased", counting)
    store.io_stats().reset()
    got = store.read_batch(keys, starts, stops, device="cpu", size_hint=hint)
    assert _requests(got) == want
    # Only open-ended requests of files larger than the hint went to the two-phase path.
    larger = sum(1 for k, r in zip(keys, reqs, strict=True) if k.startswith("f")
                 and (r is None or isinstance(r, OffsetByteRequest))
                 and int(k[1:].split("-")[0]) - (r.offset if r else 0) > hint)
    assert phased == ([larger] if larger else [])
    stats = store.io_stats()
    assert stats.requests == len(keys) + larger
    assert stats.bytes_read == sum(len(w or b"") for w in want)


def _evict(paths: list[Path]) -> bool:
    """Drop ``paths`` from the page cache; True if a RWF_NOWAIT read then finds the last one
    missing (not the first: such a read may start readahead, and the store probes the first)."""
    from benchmarks.datasets import drop_page_cache

    drop_page_cache(paths)
    fd = os.open(paths[-1], os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
    except BlockingIOError:
        return True
    except OSError:  # RWF_NOWAIT unsupported here
        return False
    finally:
        os.close(fd)
    return False


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs Linux RWF_NOWAIT")
def test_files_not_in_the_page_cache_read_the_same(store: GDSStore) -> None:
    """The probe's RWF_NOWAIT reads: a file on disk is read all the same, and counted."""
    rng = np.random.default_rng(5)
    payloads = {f"c/{i}": rng.bytes(int(rng.integers(1, 9000))) for i in range(100)}
    for key, data in payloads.items():
        _write(store.root, key, data)
    keys = list(payloads)
    if not _evict([store.root / k for k in keys]):
        pytest.skip("this filesystem keeps the files cached (or has no RWF_NOWAIT)")
    store.io_stats().reset()
    got = store.read_batch(keys, device="cpu", size_hint=8192)  # some files overflow
    assert _requests(got) == list(payloads.values())
    assert store.io_stats().uncached >= 1
    store.io_stats().reset()
    store.read_batch(keys, device="cpu", size_hint=8192)  # now cached: the probe says so
    assert store.io_stats().uncached == 0


def test_size_hint_path_refuses_what_the_careful_path_refuses(store: GDSStore) -> None:
    (store.root / "c" / "d").mkdir(parents=True)
    _write(store.root, "c/ok", b"abc")
    for bad in ("c/d",):
        with pytest.raises(ChunkReadError, match="directory"):
            store.read_batch(["c/ok", bad], device="cpu", size_hint=16)
    os.mkfifo(store.root / "c" / "fifo")  # O_NONBLOCK open, then preadv fails: no hang
    with pytest.raises(ChunkReadError, match="regular file"):
        store.read_batch(["c/ok", "c/fifo"], device="cpu", size_hint=16)
    os.symlink(store.root / "c" / "ok", store.root / "c" / "alias")
    got = store.read_batch(["c/alias", "c/ok"], device="cpu", size_hint=16)
    assert _requests(got) == [b"abc", b"abc"]
    outside = store.root.parent / "outside"
    outside.write_bytes(b"secret")
    os.symlink(outside, store.root / "c" / "leak")
    with pytest.raises(InvalidKeyError):
        store.read_batch(["c/ok", "c/leak"], device="cpu", size_hint=16)


def test_size_hint_never_reserves_a_corrupt_claim(store: GDSStore) -> None:
    """A bounded range longer than the hint (a shard index claiming a terabyte) is sized by
    the file first, as without a hint: no terabyte buffer."""
    _write(store.root, "shard", b"x" * 100)
    got = store.read_batch(["shard"], np.array([10]), np.array([1 << 40]), device="cpu",
                           size_hint=64)
    assert _requests(got) == [b"x" * 90] and got.data.nbytes == 90


# ---------------------------------------------------------------- missing and unreadable


async def test_missing_key_is_none_everywhere(store: GDSStore) -> None:
    _write(store.root, "here", b"abc")
    assert await store.get("nope", PROTO) is None
    assert store.get_sync("nope") is None
    assert store.get_sync("here/below") is None  # a path through a file: missing, as LocalStore
    got = await store.get_partial_values(PROTO, [("nope", None), ("here", None),
                                                 ("nope", RangeByteRequest(0, 1))])
    assert _bytes(got) == [None, b"abc", None]
    many = [kv async for kv in store._get_many([("nope", PROTO, None), ("here", PROTO, None)])]
    assert [(k, None if b is None else b.to_bytes()) for k, b in many] == [("nope", None),
                                                                          ("here", b"abc")]
    batch = store.read_batch(["here", "nope"], device="cpu")
    assert batch.present.tolist() == [True, False] and batch.sizes.tolist() == [3, 0]
    with pytest.raises(BaseExceptionGroup) as info:
        store.get_ranges_sync("nope", [None], prototype=PROTO)
    assert info.value.subgroup(FileNotFoundError) is not None
    with pytest.raises(BaseExceptionGroup):
        _ = [b async for b in store.get_ranges("nope", [None], prototype=PROTO)]
    assert not await store.exists("nope")
    with pytest.raises(FileNotFoundError):
        await store.getsize("nope")


async def test_directory_where_a_file_should_be_is_an_error(store: GDSStore) -> None:
    (store.root / "c" / "0").mkdir(parents=True)
    with pytest.raises(ChunkReadError, match=r"'c/0'.*directory") as info:
        await store.get("c/0", PROTO)
    assert info.value.key == "c/0" and isinstance(info.value, OSError)
    with pytest.raises(ChunkReadError):
        await store.get_partial_values(PROTO, [("c/0", None)])
    assert not await store.exists("c/0")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
async def test_unreadable_file_is_an_error(store: GDSStore) -> None:
    _write(store.root, "c/0", b"x")
    os.chmod(store.root / "c" / "0", 0)
    try:
        with pytest.raises(ChunkReadError, match="'c/0'"):
            await store.get("c/0", PROTO)
    finally:
        os.chmod(store.root / "c" / "0", 0o644)


# ---------------------------------------------------------------- writes


async def test_set_is_atomic_and_leaves_no_temp_files(
    store: GDSStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.set("a/b/c", _buf(b"old"))
    assert sorted(os.listdir(store.root / "a" / "b")) == ["c"]

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        await store.set("a/b/c", _buf(b"new"))
    monkeypatch.undo()
    assert (store.root / "a" / "b" / "c").read_bytes() == b"old"
    assert sorted(os.listdir(store.root / "a" / "b")) == ["c"]


async def test_set_if_not_exists_never_replaces(store: GDSStore) -> None:
    await store.set_if_not_exists("k", _buf(b"1"))
    await store.set_if_not_exists("k", _buf(b"2"))
    assert (store.root / "k").read_bytes() == b"1"
    assert os.listdir(store.root) == ["k"]


async def test_temp_files_are_not_listed(store: GDSStore) -> None:
    await store.set("c/0", _buf(b"x"))
    (store.root / "c" / f".0.{'ab' * 16}.partial").write_bytes(b"junk")
    assert [k async for k in store.list()] == ["c/0"]
    assert [k async for k in store.list_dir("c")] == ["0"]


async def test_read_only_refuses_every_write(tmp_path: Path) -> None:
    _write(tmp_path, "k", b"v")
    ro = GDSStore(tmp_path, read_only=True)
    msg = "store was opened in read-only mode and does not support writing"
    for call in (ro.set("k", _buf(b"x")), ro.set_if_not_exists("n", _buf(b"x")),
                 ro.delete("k"), ro.delete_dir(""), ro.clear()):
        with pytest.raises(ReadOnlyError, match=msg):
            await call
    for sync_call in (lambda: ro.set_sync("k", _buf(b"x")), lambda: ro.delete_sync("k")):
        with pytest.raises(ValueError, match=msg):
            sync_call()
    assert os.listdir(tmp_path) == ["k"] and (tmp_path / "k").read_bytes() == b"v"


# ---------------------------------------------------------------- keys cannot escape


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "a\x00b", "a\\b", ""])
async def test_escaping_keys_are_refused(tmp_path: Path, key: str) -> None:
    (tmp_path / "x").write_bytes(b"secret")
    store = GDSStore(tmp_path / "root")
    with pytest.raises(InvalidKeyError):
        await store.get(key, PROTO)
    with pytest.raises(InvalidKeyError):
        await store.get_partial_values(PROTO, [("fine", None), (key, None)])
    with pytest.raises(InvalidKeyError):
        await store.set(key, _buf(b"pwned"))
    with pytest.raises(InvalidKeyError):
        await store.delete(key)
    with pytest.raises(InvalidKeyError):
        await store.exists(key)
    assert (tmp_path / "x").read_bytes() == b"secret"


async def test_symlinks_out_of_root_are_refused_and_inside_root_work(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    _write(outside, "secret", b"secret")
    _write(root, "real/0", b"inside")
    os.symlink(outside / "secret", root / "leak")        # file link out
    os.symlink(outside, root / "out")                     # directory link out
    os.symlink(root / "real" / "0", root / "alias")     # file link in
    os.symlink(root / "real", root / "inner")             # directory link in
    store = GDSStore(root)
    for key in ("leak", "out/secret"):
        with pytest.raises(InvalidKeyError, match="outside the store root"):
            await store.get(key, PROTO)
        with pytest.raises(InvalidKeyError):
            await store.exists(key)
    with pytest.raises(InvalidKeyError):
        await store.get_partial_values(PROTO, [("alias", None), ("leak", None)])
    with pytest.raises(InvalidKeyError):
        _ = [k async for k in store.list_prefix("out/")]
    assert (await store.get("alias", PROTO)).to_bytes() == b"inside"
    assert (await store.get("inner/0", PROTO)).to_bytes() == b"inside"
    assert await store.exists("alias")
    assert sorted([k async for k in store.list()]) == ["alias", "real/0"]
    await store.delete("leak")  # removes the link, not its target
    assert (outside / "secret").read_bytes() == b"secret"


# ---------------------------------------------------------------- identity


def test_pickle_and_equality(tmp_path: Path) -> None:
    store = GDSStore(tmp_path, read_only=True)
    store.get_sync("missing")  # creates a backend, which must not travel
    clone = pickle.loads(pickle.dumps(store))
    assert clone == store and clone.read_only
    assert store == GDSStore(str(tmp_path)) and store != GDSStore(tmp_path / "other")
    assert store != LocalStore(tmp_path)
    assert not store.with_read_only(False).read_only


def test_byte_range_tuples_are_refused(store: GDSStore) -> None:
    with pytest.raises(TypeError, match="Unexpected byte_range"):
        store.get_sync("k", byte_range=(0, 2))  # type: ignore[arg-type]


# ---------------------------------------------------------------- batch_from_buffers


def test_batch_from_buffers_packs_a_foreign_answer() -> None:
    batch = batch_from_buffers([_buf(b"ab"), None, _buf(b""), _buf(b"xyz")])
    assert isinstance(batch, BatchRead) and batch.device == "cpu"
    assert batch.present.tolist() == [True, False, True, True]
    assert [bytes(batch.view(i)) for i in range(len(batch))] == [b"ab", b"", b"", b"xyz"]
    empty = batch_from_buffers([None])
    assert len(empty.data) == 0 and empty.present.tolist() == [False]


@pytest.mark.parametrize("read_only", [True, False])
def test_a_file_as_the_root_says_so(tmp_path: Path, read_only: bool) -> None:
    """Issue 20, item 5: a file given as the store root is named as a file, not as missing."""
    root = tmp_path / "data.h5"
    root.write_bytes(b"\x89HDF")
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        zarr.open_array(GDSStore(root, read_only=read_only), mode="r")
