"""VirtualiZarr manifests read in batches (issue 22, item 1) and HDF5's filter chains decoded in
batches on the CPU (item 2), against real HDF5 files written by h5py and h5py's own reads
(the pure parts: tests/test_manifest_plan.py, tests/test_filters.py).

A ManifestStore has no batched read of its own: every chunk of a zarr read was a ``get``. Here
a batch of chunk keys resolves to file ranges from the manifest's arrays and is ONE backend
read (preadv for local files, obstore for S3 and HTTP); the fletcher32 + zlib + shuffle chain
decodes without numcodecs, which stays the reference for whatever the native path refuses.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("virtualizarr")
pytest.importorskip("h5py")

import zarr
from manifest_cases import STORED, WINDOWS, edited, http_store, local_store, s3_store, write_hdf5

import gds_zarr
from gds_zarr.decode import _cpu
from gds_zarr.errors import ChunkReadError
from gds_zarr.pipeline import stats
from gds_zarr.store._manifest import manifest_reader

DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"


@pytest.fixture(scope="module")
def h5(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("h5") / "era.nc"
    return path, write_hdf5(path)


def _same(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.dtype.newbyteorder("=") == ref.dtype.newbyteorder("="), (got.dtype, ref.dtype)
    np.testing.assert_array_equal(got, ref)


# ---------------------------------------------------------------- local files


def test_manifest_chunks_are_read_in_one_batch(h5: tuple[Path, dict[str, np.ndarray]],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path, expected = h5
    ms = local_store(path)
    slow: list[str] = []
    real = _cpu._decode_one
    monkeypatch.setattr(_cpu, "_decode_one", lambda s, b, r, k: (slow.append(k), real(s, b, r, k)))
    with gds_zarr.enable(device="cpu"):
        group = zarr.open_group(ms, mode="r")
        reader = manifest_reader(ms)
        assert reader is not None
        for name, ref in expected.items():
            stats.reset()
            before = reader.io_stats("cpu")
            _same(group[name][...], ref)
            io = reader.io_stats("cpu")
            assert stats.fast_reads == 1 and stats.delegated_reads == 0, (name, stats)
            assert stats.store_reads == 1, (name, stats)  # one batched read, not one per chunk
            assert io.requests - before.requests == STORED[name], name
            assert io.files_opened - before.files_opened == 1, name
            for sel in WINDOWS:
                _same(group[name][sel], ref[sel])
        assert stats.delegated_reads == 0
    assert not slow  # fletcher32 + zlib + shuffle decoded without numcodecs
    # the 300 chunks of t2m in a few coalesced reads, not 300
    stats.reset()
    before = reader.io_stats("cpu")
    with gds_zarr.enable(device="cpu"):
        group["t2m"][...]
    assert reader.io_stats("cpu").reads - before.reads < 10


def test_equal_to_zarrs_own_reads_of_the_manifest(h5: tuple[Path, dict[str, np.ndarray]]
                                                  ) -> None:
    path, expected = h5
    ms = local_store(path)
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        ref = {k: zarr.open_group(ms, mode="r")[k][...] for k in expected}
    with gds_zarr.enable(device="cpu"):
        group = zarr.open_group(ms, mode="r")
        for name in expected:
            got = group[name][...]
            assert got.dtype == ref[name].dtype
            np.testing.assert_array_equal(got, ref[name])


def test_fill_values_where_no_chunk_is_stored(h5: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, expected = h5
    ms = local_store(path)
    assert (ms._group.arrays["sparse"].manifest._paths == "").sum() == 12 - STORED["sparse"]
    with gds_zarr.enable(device="cpu"):
        z = zarr.open_group(ms, mode="r")["sparse"]
        got = z[...]
    _same(got, expected["sparse"])
    assert (got[10:30] == -9.5).all() and z.fill_value == -9.5


def test_read_many_over_a_manifest(h5: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, expected = h5
    ms = local_store(path)
    z = zarr.open_group(ms, mode="r")["t2m"]
    rng = np.random.default_rng(1)
    corners = rng.integers(0, (240 - 32, 320 - 32), size=(40, 2))
    sels = [np.s_[y:y + 32, x:x + 32] for y, x in corners]
    stats.reset()
    got = gds_zarr.read_many(z, sels, device="cpu")
    assert stats.store_reads == 1 and stats.delegated_reads == 0, stats
    np.testing.assert_array_equal(got, np.stack([expected["t2m"][s] for s in sels]))


def test_window_loader_over_a_manifest(h5: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, expected = h5
    z = zarr.open_group(local_store(path), mode="r")["precip"]
    corners = np.array([[i, 2 * i] for i in range(25)])
    with gds_zarr.WindowLoader(z, window=(9, 20), starts=corners, batch_size=8,
                               device="cpu") as loader:
        got = np.concatenate(list(loader))
    np.testing.assert_array_equal(got, np.stack([expected["precip"][y:y + 9, x:x + 20]
                                                 for y, x in corners]))


def test_a_file_shorter_than_its_manifest(tmp_path: Path) -> None:
    path = tmp_path / "short.nc"
    write_hdf5(path)
    ms = local_store(path)
    m = ms._group.arrays["t2m"].manifest
    last = int((m._offsets + m._lengths).max())
    os.truncate(path, last - 10)  # the last chunk of t2m now runs past the end of the file
    with gds_zarr.enable(device="cpu"), pytest.raises(ChunkReadError) as e:
        zarr.open_group(ms, mode="r")["t2m"][...]
    assert "'t2m/c/" in str(e.value) and str(path) in str(e.value)
    assert "past the end" in str(e.value)


def test_a_missing_file_is_an_error_not_a_fill_value(tmp_path: Path) -> None:
    path = tmp_path / "gone.nc"
    write_hdf5(path)
    ms = local_store(path)
    path.rename(tmp_path / "elsewhere.nc")
    with gds_zarr.enable(device="cpu"), pytest.raises(ChunkReadError, match="does not exist"):
        zarr.open_group(ms, mode="r")["precip"][...]


def test_a_relative_path_in_a_manifest_is_refused(h5: tuple[Path, dict[str, np.ndarray]]
                                                  ) -> None:
    from numpy.dtypes import StringDType

    path, _ = h5
    m = local_store(path)._group.arrays["mask"].manifest
    relative = np.full(m._paths.shape, "data/era.nc", dtype=StringDType())
    ms = edited(local_store(path), "mask", paths=relative)
    with gds_zarr.enable(device="cpu"), pytest.raises(ChunkReadError,
                                                      match="neither an absolute path"):
        zarr.open_group(ms, mode="r")["mask"][...]


def test_other_stores_are_not_taken_for_manifests(tmp_path: Path) -> None:
    assert manifest_reader(zarr.storage.MemoryStore()) is None
    assert manifest_reader(gds_zarr.GDSStore(tmp_path)) is None


# ---------------------------------------------------------------- HTTP and S3


@pytest.fixture(scope="module")
def served(h5: tuple[Path, dict[str, np.ndarray]]) -> Iterator[Any]:
    pytest.importorskip("moto")
    from _servers import RangeServer

    server = RangeServer(h5[0].parent)
    try:
        yield server
    finally:
        server.close()


def test_manifest_over_http(h5: tuple[Path, dict[str, np.ndarray]], served: Any) -> None:
    path, expected = h5
    ms = http_store(served.url, path.name)
    with gds_zarr.enable(device="cpu"):
        group = zarr.open_group(ms, mode="r")
        for name, ref in expected.items():
            served.requests.clear()
            stats.reset()
            _same(group[name][...], ref)
            assert stats.store_reads == 1, (name, stats)
            # one request round: the chunks' ranges of the one file, coalesced
            assert served.total("HEAD") == 0 and 1 <= served.total("GET") <= 2, served.requests


def test_manifest_over_s3(h5: tuple[Path, dict[str, np.ndarray]]) -> None:
    pytest.importorskip("moto")
    import obstore
    from _servers import create_bucket, start_moto
    from obstore.store import S3Store

    path, expected = h5
    with start_moto() as endpoint:
        create_bucket(endpoint, "gds-zarr-vz")
        client = S3Store("gds-zarr-vz", endpoint=endpoint, access_key_id="AKID",
                         secret_access_key="secret", region="us-east-1",
                         client_options={"allow_http": True})
        key = f"{uuid.uuid4().hex}/era.nc"
        obstore.put(client, key, path.read_bytes())
        ms = s3_store(client, f"s3://gds-zarr-vz/{key}")
        with gds_zarr.enable(device="cpu"):
            group = zarr.open_group(ms, mode="r")
            reader = manifest_reader(ms)
            for name, ref in expected.items():
                stats.reset()
                before = reader.io_stats("cpu")
                _same(group[name][...], ref)
                io = reader.io_stats("cpu")
                assert stats.store_reads == 1, (name, stats)
                assert io.requests - before.requests == STORED[name]
                assert io.reads - before.reads <= 2  # coalesced ranges of one object
            obstore.delete(client, key)
            with pytest.raises(ChunkReadError, match="does not exist"):
                group["mask"][...]


def test_byte_ranges_of_chunks_are_what_get_returns(h5: tuple[Path, dict[str, np.ndarray]]
                                                    ) -> None:
    """Whole chunks, ranges, offsets and suffixes (a sharded virtual array's index and inner
    chunks are such requests) equal ManifestStore.get's answers; a chunk not stored is absent."""
    import asyncio

    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
    from zarr.core.buffer import default_buffer_prototype

    path, _ = h5
    ms = local_store(path)
    reader = manifest_reader(ms)
    keys = ["precip/c/0/0", "precip/c/1/2", "precip/c/4/1", "precip/c/2/2",
            "sparse/c/2/0"]
    requests = [None, RangeByteRequest(3, 40), OffsetByteRequest(10), SuffixByteRequest(16),
                None]
    starts = np.array([0, 3, 10, -16, 0])
    stops = np.array([-1, 40, -1, -1, -1])
    got = reader.read_batch(keys[:4], starts[:4], stops[:4])
    assert got is not None
    for i, (k, r) in enumerate(zip(keys[:4], requests[:4], strict=True)):
        want = asyncio.run(ms.get(k, default_buffer_prototype(), byte_range=r)).to_bytes()
        assert got.view(i).tobytes() == want, k
    sparse = reader.read_batch(keys[4:], starts[4:], stops[4:])
    assert sparse is not None and not sparse.present[0]
    # keys that are not chunks of one manifest array: the store's own get reads them
    assert reader.read_batch(["precip/c/0/0", "t2m/c/0/0"], starts[:2], stops[:2]) is None
    assert reader.read_batch(["precip/zarr.json"], starts[:1], stops[:1]) is None


def test_inlined_chunks_come_from_the_manifest(h5: tuple[Path, dict[str, np.ndarray]]) -> None:
    from numpy.dtypes import StringDType
    from virtualizarr.manifests import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore

    path, expected = h5
    ms = local_store(path)
    old = ms._group.arrays["mask"]
    m = old.manifest
    raw = path.read_bytes()
    paths = m._paths.copy()
    paths[1, 0] = "__inlined__"  # the second chunk's bytes held in the manifest itself
    inlined = {(1, 0): raw[int(m._offsets[1, 0]): int(m._offsets[1, 0] + m._lengths[1, 0])]}
    manifest = ChunkManifest.from_arrays(paths=np.asarray(paths, dtype=StringDType()),
                                         offsets=m._offsets, lengths=m._lengths,
                                         inlined=inlined)
    group = ManifestGroup(arrays={"mask": ManifestArray(old.metadata, manifest)})
    store = ManifestStore(group, registry=ms._registry)
    with gds_zarr.enable(device="cpu"):
        stats.reset()
        _same(zarr.open_group(store, mode="r")["mask"][...], expected["mask"])
        assert stats.store_reads == 1 and stats.delegated_reads == 0


def test_the_netcdf_benchmark_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m benchmarks.netcdf`` on a 2-step file: every reader, the same values (the
    benchmark compares each read with h5py's), a table written."""
    from benchmarks.netcdf import main  # the repository is on sys.path (tests/conftest.py)

    monkeypatch.chdir(tmp_path)
    main(["--steps", "2", "--repeats", "1", "--out", str(tmp_path / "r.md")])
    text = (tmp_path / "r.md").read_text()
    assert "| whole variable |" in text and "| 100 windows of 1x256x256 |" in text
