"""Remote stores read into device memory: kvikio ``RemoteFile`` (S3 through the AWS_*
environment, HTTP) and the host-staged path (S3 configured through storage_options), against
the same local servers as the CPU tests. Skipped (whole module) without a usable GPU.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gds_zarr._device import gpu_status

if not gpu_status().usable:
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)
pytest.importorskip("obstore")
pytest.importorskip("moto")

import zarr
import zarr.codecs as zc
from _servers import RangeServer, create_bucket, start_moto
from pipeline_cases import DEFAULT, make, sample_data

import gds_zarr
from gds_zarr.store import GDSStore

BUCKET = "gds-zarr-gpu"
KEY_ID, SECRET = "AKIDGPUTEST", "gpu-secret"
DATA = np.random.default_rng(5).bytes(300_000)
REQUESTS = (["obj"] * 5 + ["missing"],
            np.array([0, 10, 299_990, -100, 1000, 0]),
            np.array([-1, 20_000, 400_000, -1, 1000, -1]))


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with start_moto() as endpoint:
        create_bucket(endpoint, BUCKET)
        yield endpoint


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RangeServer]:
    root = tmp_path_factory.mktemp("gpu_http")
    (root / "obj").write_bytes(DATA)
    server = RangeServer(root)
    yield server
    server.close()


@pytest.fixture
def aws_env(s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Endpoint and credentials in the environment, where kvikio reads them."""
    for k, v in {"AWS_ENDPOINT_URL": s3, "AWS_ACCESS_KEY_ID": KEY_ID,
                 "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)


def _same_on_both_devices(store: GDSStore) -> None:
    import cupy as cp

    keys, starts, stops = REQUESTS
    host = store.read_batch(keys, starts, stops, device="cpu")
    dev = store.read_batch(keys, starts, stops, device="gpu")
    assert dev.device == "gpu" and isinstance(dev.data, cp.ndarray)
    assert dev.present.tolist() == host.present.tolist() == [True] * 5 + [False]
    assert dev.sizes.tolist() == host.sizes.tolist()
    for i in range(len(keys)):
        assert cp.asnumpy(dev.view(i)).tobytes() == host.view(i).tobytes(), i


def test_s3_through_the_environment_reads_with_kvikio_remote_file(aws_env: None) -> None:
    prefix = uuid.uuid4().hex
    store = GDSStore(f"s3://{BUCKET}/{prefix}")
    store.set_sync("obj", gds_zarr_buffer(DATA))
    backend, reason = store.gpu_read_path()  # type: ignore[attr-defined]
    print(backend, reason)  # shown with -s: which path this machine took
    _same_on_both_devices(store)


def test_http_reads_with_kvikio_remote_file(http: RangeServer) -> None:
    store = GDSStore(http.url)
    backend, reason = store.gpu_read_path()  # type: ignore[attr-defined]
    print(backend, reason)
    _same_on_both_devices(store)


def test_s3_with_storage_options_stages_on_the_host(s3: str) -> None:
    store = GDSStore(f"s3://{BUCKET}/{uuid.uuid4().hex}", storage_options={
        "endpoint": s3, "access_key_id": KEY_ID, "secret_access_key": SECRET,
        "region": "us-east-1"})
    assert store.gpu_read_path()[0].startswith("obstore")  # type: ignore[attr-defined]
    store.set_sync("obj", gds_zarr_buffer(DATA))
    _same_on_both_devices(store)


def test_pipeline_reads_a_remote_sharded_array_onto_the_gpu(http: RangeServer,
                                                              tmp_path: Path) -> None:
    import cupy as cp

    data = sample_data((23, 17), "float32")
    make(str(http.root / "arr.zarr"), data, chunks=(3, 4), shards=(6, 8), write=np.s_[:12, :],
         fill_value=np.nan, compressors=zc.ZstdCodec())
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        ref = zarr.open_array(zarr.storage.LocalStore(http.root / "arr.zarr"), mode="r")[...]
    from gds_zarr.decode._gpu import gpu_decode_stats

    with gds_zarr.enable(device="gpu"):
        z = zarr.open_array(GDSStore(f"{http.url}/arr.zarr"), mode="r")
        before = http.total()
        gpu_decode_stats.reset()
        got = z[...]
    # One round: 12 shard indexes whose prefetched tails (whole shards) hold every chunk.
    assert http.total() - before == 12
    # Staged on the host, every inner chunk placed for nvCOMP: nothing re-packed.
    assert gpu_decode_stats.nvcomp_calls >= 1 and gpu_decode_stats.repacked_chunks == 0
    assert isinstance(got, cp.ndarray)
    assert cp.asnumpy(got).tobytes() == np.asarray(ref).tobytes()


def test_unsharded_chunks_onto_the_gpu_are_one_get_each_without_heads(
        http: RangeServer) -> None:
    """Whole chunks have no known size: the kvikio backend reads them on the host in one round
    of GETs (no HEAD round for its preads) and copies the batch to the device once."""
    import cupy as cp

    data = sample_data((23, 17), "float32")
    make(str(http.root / "flat.zarr"), data, chunks=(6, 5), compressors=zc.ZstdCodec())
    with gds_zarr.enable(device="gpu"):
        z = zarr.open_array(GDSStore(f"{http.url}/flat.zarr"), mode="r")
        heads, before = http.total("HEAD"), http.total()
        got = z[...]
    assert http.total("HEAD") == heads
    assert http.total() - before == 4 * 4  # one GET per chunk
    assert cp.asnumpy(got).tobytes() == data.tobytes()


def gds_zarr_buffer(data: bytes) -> Any:
    from zarr.core.buffer import cpu

    return cpu.Buffer.from_bytes(data)


def test_anonymous_s3_reads_with_kvikio_remote_file(s3: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Unsigned S3 through kvikio: its public reader fetches the URL it is given, so it must be
    the object's HTTP URL (an ``s3://`` URL failed: libcurl has no such scheme)."""
    import urllib.request

    prefix = uuid.uuid4().hex
    urllib.request.urlopen(urllib.request.Request(  # a public object: ACL public-read
        f"{s3}/{BUCKET}/{prefix}/obj", data=DATA, method="PUT",
        headers={"x-amz-acl": "public-read", "Content-Type": "application/octet-stream"}),
        timeout=30).read()
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = GDSStore(f"s3://{BUCKET}/{prefix}")
    assert store.gpu_read_path()[0] == "kvikio RemoteFile"  # type: ignore[attr-defined]
    _same_on_both_devices(store)


def test_s3_region_from_aws_region_alone(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """kvikio reads only AWS_DEFAULT_REGION; AWS_REGION (obstore's, boto's) must do too."""
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    store = GDSStore(f"s3://{BUCKET}/{uuid.uuid4().hex}")
    store.set_sync("obj", gds_zarr_buffer(DATA))
    assert store.gpu_read_path()[0] == "kvikio RemoteFile"  # type: ignore[attr-defined]
    _same_on_both_devices(store)
