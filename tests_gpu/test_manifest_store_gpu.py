"""VirtualiZarr's ManifestStore over HDF5 files read onto the GPU (issue 22, items 1 and 2 on the
device): the manifest's ranges in one kvikio batch (local files) or one kvikio RemoteFile round
(HTTP, S3), HDF5's fletcher32 + deflate + shuffle chain decoded on the device (a Fletcher-32
kernel, nvCOMP Deflate, an unshuffle kernel), values equal to h5py's own."""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gds_zarr._device import gpu_status

if not gpu_status().usable:
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)
pytest.importorskip("virtualizarr")
pytest.importorskip("h5py")

import cupy
import numcodecs
import zarr
from decode_cases import batch, encode, rows, step
from manifest_cases import STORED, WINDOWS, http_store, local_store, s3_store, write_hdf5
from numcodecs.fletcher32 import Fletcher32
from test_stores_without_batched_reads import _hdf5

import gds_zarr
from gds_zarr.decode._cpu import CpuDecoder
from gds_zarr.decode._gpu import NvcompDecoder, device_decoder, gpu_decode_stats
from gds_zarr.errors import ChunkDecodeError
from gds_zarr.pipeline import stats
from gds_zarr.store._manifest import manifest_reader


@pytest.fixture(autouse=True)
def _forget_kvikio_records() -> Iterator[None]:
    """The emulated kvikio's I/O records of these reads are not left to the next module's
    tests (tests_gpu/test_remote_io_gpu.py counts its own kvikio reads)."""
    yield
    if "kvikio" in sys.modules:
        try:
            emulated = importlib.import_module("kvikio._emulated")
        except ImportError:  # the real kvikio keeps no records
            return
        emulated.clear_records()


@pytest.fixture(scope="module")
def h5(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("h5") / "era.nc"
    return path, write_hdf5(path)


def test_manifest_store_onto_the_gpu(tmp_path: Path) -> None:
    path = tmp_path / "era.h5"
    expected = _hdf5(path)
    ms = local_store(path)
    with gds_zarr.enable(device="gpu"):
        group = zarr.open_group(ms, mode="r")
        for name, ref in expected.items():
            stats.reset()
            got = group[name][2:40, 3:19]
            assert isinstance(got, cupy.ndarray)
            np.testing.assert_array_equal(cupy.asnumpy(got), ref[2:40, 3:19])
            assert stats.delegated_reads == 0 and stats.fast_reads == 1, (name, stats)


def test_hdf5_chains_decode_on_the_device(h5: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, expected = h5
    ms = local_store(path)
    with gds_zarr.enable(device="gpu"):
        group = zarr.open_group(ms, mode="r")
        reader = manifest_reader(ms)
        assert reader is not None
        for name, ref in expected.items():
            stats.reset()
            gpu_decode_stats.reset()
            before = reader.io_stats("gpu")
            got = group[name][...]
            assert isinstance(got, cupy.ndarray)
            np.testing.assert_array_equal(cupy.asnumpy(got), ref)
            io = reader.io_stats("gpu")
            assert stats.store_reads == 1 and stats.delegated_reads == 0, (name, stats)
            assert io.requests - before.requests == STORED[name]
            assert io.files_opened - before.files_opened == 1
            # every stored chunk decoded on the device, none on the host
            assert gpu_decode_stats.device_chunks == STORED[name], (name, gpu_decode_stats)
            assert gpu_decode_stats.cpu_chunks == 0, (name, gpu_decode_stats)
            for sel in WINDOWS:
                np.testing.assert_array_equal(cupy.asnumpy(group[name][sel]), ref[sel])


def test_read_many_over_a_manifest_on_the_gpu(h5: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, expected = h5
    z = zarr.open_group(local_store(path), mode="r")["precip"]
    sels = [np.s_[i:i + 9, 2 * i:2 * i + 20] for i in range(20)]
    stats.reset()
    got = gds_zarr.read_many(z, sels, device="gpu")
    assert isinstance(got, cupy.ndarray) and stats.store_reads == 1, stats
    np.testing.assert_array_equal(cupy.asnumpy(got), np.stack([expected["precip"][s]
                                                               for s in sels]))


@pytest.mark.parametrize("elementsize", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("compressor", ["zlib", "gzip", "zstd", None])
def test_filter_chains_on_the_device_equal_the_cpu(elementsize: int,
                                                   compressor: str | None) -> None:
    codecs = {"zlib": numcodecs.Zlib(4), "gzip": numcodecs.GZip(5), "zstd": numcodecs.Zstd(3)}
    steps = [step("fletcher32", Fletcher32())]
    if compressor is not None:
        steps.append(step(compressor, codecs[compressor]))
    steps.append(step("shuffle", numcodecs.Shuffle(elementsize)))
    assert device_decoder([s.kind for s in steps]) is not None
    rng = np.random.default_rng(elementsize)
    nbytes = 1024 * elementsize
    raws = [np.cumsum(rng.standard_normal(nbytes // 8)).astype("<f8").tobytes()
            for _ in range(5)]
    src = batch([encode(steps, r) for r in raws])
    keys = [f"k{i}" for i in range(5)]
    gpu_decode_stats.reset()
    got = NvcompDecoder().decode_batch(steps, src, np.arange(5), nbytes, keys)
    assert gpu_decode_stats.device_chunks == 5 and gpu_decode_stats.cpu_chunks == 0
    np.testing.assert_array_equal(cupy.asnumpy(got), rows(raws))
    host = CpuDecoder().decode_batch(steps, batch([encode(steps, r) for r in raws], False),
                                     np.arange(5), nbytes, keys)
    np.testing.assert_array_equal(cupy.asnumpy(got), host)
    into = cupy.zeros((5, nbytes), cupy.uint8)  # the caller's rows: unshuffled straight there
    out = NvcompDecoder().decode_batch(steps, src, np.arange(5), nbytes, keys, out=into)
    assert out is into
    np.testing.assert_array_equal(cupy.asnumpy(into), rows(raws))


def test_a_bad_fletcher32_on_the_device_names_the_chunk() -> None:
    steps = [step("fletcher32", Fletcher32()), step("zlib", numcodecs.Zlib(4)),
             step("shuffle", numcodecs.Shuffle(4))]
    raws = [np.arange(1000, dtype="<f4").tobytes()] * 3
    encoded = [encode(steps, r) for r in raws]
    bad = bytearray(encoded[2])
    bad[7] ^= 0x10
    encoded[2] = bytes(bad)
    with pytest.raises(ChunkDecodeError, match=r"'k2'.*stored Fletcher-32"):
        NvcompDecoder().decode_batch(steps, batch(encoded), np.arange(3), 4000,
                                     ["k0", "k1", "k2"])


def test_shuffle_only_last_runs_on_the_device() -> None:
    assert device_decoder(["fletcher32", "zlib", "shuffle"]) == (
        "nvCOMP Deflate + Fletcher-32 kernel + unshuffle kernel")
    assert device_decoder(["shuffle", "zlib"]) is None
    assert device_decoder(["zstd", "shuffle"]) == "nvCOMP Zstd + unshuffle kernel"


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


def test_manifest_over_http_onto_the_gpu(h5: tuple[Path, dict[str, np.ndarray]],
                                         served: Any) -> None:
    path, expected = h5
    ms = http_store(served.url, path.name)
    with gds_zarr.enable(device="gpu"):
        group = zarr.open_group(ms, mode="r")
        for k, (name, ref) in enumerate(expected.items()):
            served.requests.clear()
            stats.reset()
            np.testing.assert_array_equal(cupy.asnumpy(group[name][...]), ref)
            assert stats.store_reads == 1, (name, stats)
            # kvikio RemoteFile needs the file's size: one HEAD, the first time only
            assert served.total("HEAD") == (1 if k == 0 else 0), served.requests
        assert "KvikioRemote" in repr(list(manifest_reader(ms)._backends.values()))


def test_manifest_over_s3_onto_the_gpu(h5: tuple[Path, dict[str, np.ndarray]],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("moto")
    import obstore
    from _servers import create_bucket, start_moto
    from obstore.store import S3Store

    path, expected = h5
    with start_moto() as endpoint:
        create_bucket(endpoint, "gds-zarr-vz")
        # kvikio takes S3 settings from the environment: a store configured the same way
        # is read by kvikio RemoteFile, straight into device memory.
        for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "AKID",
                     "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "us-east-1",
                     "AWS_ALLOW_HTTP": "true"}.items():
            monkeypatch.setenv(k, v)
        client = S3Store("gds-zarr-vz")
        key = f"{uuid.uuid4().hex}/era.nc"
        obstore.put(client, key, path.read_bytes())
        ms = s3_store(client, f"s3://gds-zarr-vz/{key}")
        with gds_zarr.enable(device="gpu"):
            group = zarr.open_group(ms, mode="r")
            for name, ref in expected.items():
                stats.reset()
                np.testing.assert_array_equal(cupy.asnumpy(group[name][...]), ref)
                assert stats.store_reads == 1, (name, stats)
        assert "KvikioRemote" in repr(list(manifest_reader(ms)._backends.values()))
