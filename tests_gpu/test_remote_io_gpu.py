"""The remote device backends (gds_zarr/io/_remote_gpu.py): which one a store gets and why,
HEAD sizing, and errors naming the object, against the local HTTP and moto S3 servers.

Values are checked against the CPU read of the same store; how kvikio moved the bytes (its
HTTP requests) is read from the emulated kvikio's records where the test needs it.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from gds_zarr._device import gpu_status

if not gpu_status().usable:
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)
pytest.importorskip("obstore")
pytest.importorskip("moto")

import cupy as cp
from _servers import RangeServer, create_bucket, start_moto
from zarr.core.buffer import cpu

from gds_zarr import settings
from gds_zarr.errors import ChunkReadError
from gds_zarr.io import _remote_gpu
from gds_zarr.io._remote import ObstoreIOBackend
from gds_zarr.io._remote_gpu import remote_gpu_backend, remote_gpu_choice, s3_http_url
from gds_zarr.store import GDSStore
from gds_zarr.store._url import parse_url

BUCKET = "gds-zarr-remote-io"
DATA = np.random.default_rng(18).bytes(3 << 20)
STAGED = "obstore + one host-to-device copy per batch"


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with start_moto() as endpoint:
        create_bucket(endpoint, BUCKET)
        yield endpoint


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RangeServer]:
    root = tmp_path_factory.mktemp("remote_io_gpu")
    (root / "obj").write_bytes(DATA)
    server = RangeServer(root)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No AWS or KVIKIO settings from the machine; kvikio's defaults read anew; no faults."""
    import importlib
    import os

    for name in list(os.environ):
        if name.startswith(("AWS_", "KVIKIO_")):
            monkeypatch.delenv(name)
    try:  # the emulated kvikio's records (imported on demand: nothing imports it before)
        emulated: Any = importlib.import_module("kvikio._emulated")
    except ImportError:  # a real kvikio
        emulated = None
    if emulated is not None:
        emulated.reset_defaults()
        emulated.clear_records()
    yield
    if emulated is not None:
        emulated.reset_defaults()


def _http_records() -> list[Any]:
    emulated = pytest.importorskip("kvikio._emulated", reason="needs the emulated kvikio")
    return [r for r in emulated.records() if r.route == "http"]


def _same_on_both_devices(store: GDSStore, keys: list[str], starts: list[int],
                          stops: list[int]) -> Any:
    s, e = np.array(starts, np.int64), np.array(stops, np.int64)
    host = store.read_batch(keys, s, e, device="cpu")
    dev = store.read_batch(keys, s, e, device="gpu")
    assert isinstance(dev.data, cp.ndarray)
    assert dev.present.tolist() == host.present.tolist()
    assert dev.sizes.tolist() == host.sizes.tolist()
    for i in range(len(keys)):
        assert cp.asnumpy(dev.view(i)).tobytes() == host.view(i).tobytes(), i
    return dev


RANGES = (["obj", "obj", "missing"], [10, 2_000_000, 0], [5000, 4_000_000, 100])


# ---------------------------------------------------------------- which backend, and why


def test_gcs_and_azure_are_staged_on_the_host() -> None:
    for url, kind in (("gs://bkt/p", "gcs"), ("az://container/p", "azure")):
        loc = parse_url(url)
        assert remote_gpu_choice(loc) == (
            STAGED, f"kvikio RemoteFile reads S3 and HTTP only, not {kind}")
        backend = remote_gpu_backend(loc, ObstoreIOBackend(None, loc.object_url, str))
        assert repr(backend) == "HostStagedIOBackend(ObstoreIOBackend())"


def _no_remote_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kvikio.remote_file", None)


def _built_without_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    import kvikio.remote_file

    monkeypatch.setattr(kvikio.remote_file, "is_remote_file_available", lambda: False)


def _before_open_http(monkeypatch: pytest.MonkeyPatch) -> None:
    import kvikio.remote_file

    monkeypatch.delattr(kvikio.remote_file.RemoteFile, "open_http")


@pytest.mark.parametrize(("kvikio_lacks", "reason"), [
    (_no_remote_module, "kvikio has no RemoteFile"),
    (_built_without_remote, "was built without remote-file support"),
    (_before_open_http, "predates RemoteFile.open_http"),
])
def test_a_kvikio_without_remote_files_stages_on_the_host(
        http: RangeServer, monkeypatch: pytest.MonkeyPatch, kvikio_lacks: Any,
        reason: str) -> None:
    """kvikio cannot read remote files here: the host-staged backend reads the same bytes,
    and ``info``'s line and the store say why."""
    kvikio_lacks(monkeypatch)
    store = GDSStore(http.url)
    backend, why = store.gpu_read_path()  # type: ignore[attr-defined]
    assert backend == STAGED and reason in why
    assert reason in _remote_gpu.remote_io_line("gpu")
    _same_on_both_devices(store, *RANGES)
    assert repr(store._backend("gpu")) == "HostStagedIOBackend(ObstoreIOBackend())"  # type: ignore[attr-defined]
    assert _http_records() == []  # kvikio read nothing


def test_the_info_line_says_how_remote_stores_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import obstore

    lib = f"obstore {obstore.__version__}"
    assert _remote_gpu.remote_io_line("cpu") == (
        f"{lib}: s3/gs/az/http batches of ranged GETs into host memory")
    assert _remote_gpu.remote_io_line("gpu") == (
        f"{lib}; S3/HTTP via kvikio RemoteFile into device memory; GCS/Azure via host + one "
        f"copy per batch")
    monkeypatch.setitem(sys.modules, "obstore", None)
    assert _remote_gpu.remote_io_line("gpu").startswith(
        "unavailable: obstore is not importable")


@pytest.mark.parametrize("source", [
    {"AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/token", "AWS_ROLE_ARN": "arn:x"},
    {"AWS_PROFILE": "analysis"},
    {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x"},
])
def test_s3_credentials_kvikio_cannot_sign_with_stage_on_the_host(
        monkeypatch: pytest.MonkeyPatch, source: dict[str, str]) -> None:
    """obstore signs with a profile, a web identity or a container role; kvikio only with
    AWS_ACCESS_KEY_ID: such a store must not be handed to kvikio (every read would fail)."""
    for k, v in source.items():
        monkeypatch.setenv(k, v)
    backend, why = remote_gpu_choice(parse_url("s3://bkt/p"))
    assert backend == STAGED and "AWS_ACCESS_KEY_ID" in why
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDX")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    assert remote_gpu_choice(parse_url("s3://bkt/p"))[0] == "kvikio RemoteFile"


def test_public_s3_urls_are_aws_virtual_hosted_without_an_endpoint() -> None:
    """What kvikio's public reader is handed: the URL AWS serves the object at."""
    assert s3_http_url(None, "bkt", "a b/c~d+e", None) == (
        "https://bkt.s3.us-east-1.amazonaws.com/a%20b/c~d%2Be")
    assert s3_http_url(None, "bkt", "k", "eu-west-1") == (
        "https://bkt.s3.eu-west-1.amazonaws.com/k")
    assert s3_http_url("http://127.0.0.1:9000/", "bkt", "k", None) == (
        "http://127.0.0.1:9000/bkt/k")


# ---------------------------------------------------------------- sizes: HEAD, or known


def test_objects_are_sized_by_one_head_each_then_read_by_kvikio(http: RangeServer) -> None:
    store = GDSStore(http.url)
    heads = http.total("HEAD")
    _same_on_both_devices(store, *RANGES)
    # The CPU read sends no HEAD; the device read one per object (the missing one included).
    assert http.total("HEAD") - heads == 2
    assert {r.target for r in _http_records()} == {f"{http.url}/obj"}
    assert repr(store._backend("gpu")) == "KvikioRemoteIOBackend()"  # type: ignore[attr-defined]


def test_ranges_of_a_prefetched_tail_need_no_head(http: RangeServer) -> None:
    """After a shard-index read brought the object's tail (and so its size) in, ranges of the
    object go to kvikio without a HEAD round."""
    store = GDSStore(http.url)
    with settings.set(remote_prefetch=1 << 20):
        store.read_batch(["obj"], np.array([-1000]), np.array([-1]), device="gpu")
        heads = http.total("HEAD")
        _same_on_both_devices(store, ["obj", "obj"], [100, len(DATA) - 5000],
                              [9000, len(DATA) - 4000])
    assert http.total("HEAD") == heads


# ---------------------------------------------------------------- errors name the object


def test_a_failed_head_names_the_object(http: RangeServer) -> None:
    http.faults["obj"] = ["403"]
    try:
        with pytest.raises(ChunkReadError) as info:
            GDSStore(http.url).read_batch(["obj"], np.array([10]), np.array([5000]),
                                          device="gpu")
    finally:
        http.faults.clear()
    assert info.value.key == "obj" and f"({http.url}/obj)" in info.value.reason


def test_a_failed_kvikio_read_names_the_object(http: RangeServer) -> None:
    http.faults["obj"] = ["ok", "403"]  # the HEAD answers, kvikio's GET is refused
    try:
        with pytest.raises(ChunkReadError, match=r"kvikio read failed: .*403") as info:
            GDSStore(http.url).read_batch(["obj"], np.array([10]), np.array([5000]),
                                          device="gpu")
    finally:
        http.faults.clear()
    assert info.value.key == "obj" and info.value.reason.endswith(f"({http.url}/obj)")


def test_kvikio_refusing_a_read_into_device_memory_names_the_object(
        http: RangeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """KVIKIO_REMOTE_IO_BACKEND=multi_poll reads into host memory only: pread raises at once
    (ValueError), which must still be a ChunkReadError naming the object."""
    pytest.importorskip("kvikio._emulated", reason="the emulated kvikio's defaults")
    monkeypatch.setenv("KVIKIO_REMOTE_IO_BACKEND", "multi_poll")
    with pytest.raises(ChunkReadError, match=r"kvikio read failed: .*MULTI_POLL") as info:
        GDSStore(http.url).read_batch(["obj"], np.array([10]), np.array([5000]), device="gpu")
    assert info.value.key == "obj"


def _s3_store(s3: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> GDSStore:
    """A store whose endpoint and credentials come from the environment, with one object."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    store = GDSStore(f"s3://{BUCKET}/{uuid.uuid4().hex}")
    store.set_sync("obj", cpu.Buffer.from_bytes(DATA[:300_000]))
    return store


def test_s3_without_a_region_reads_as_obstore_does(s3: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS_DEFAULT_REGION nor AWS_REGION: obstore signs for us-east-1, and kvikio (which
    refuses to open without a region) is given the same."""
    store = _s3_store(s3, monkeypatch, AWS_ACCESS_KEY_ID="AKIDX", AWS_SECRET_ACCESS_KEY="s")
    assert store.gpu_read_path()[0] == "kvikio RemoteFile"  # type: ignore[attr-defined]
    _same_on_both_devices(store, ["obj", "obj"], [10, 200_000], [5000, 400_000])


def test_kvikio_failing_to_open_an_object_names_it(s3: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporary (ASIA) keys without AWS_SESSION_TOKEN: kvikio refuses to open the object
    (ValueError); the error names the key and its URL."""
    store = _s3_store(s3, monkeypatch, AWS_ACCESS_KEY_ID="ASIAX", AWS_SECRET_ACCESS_KEY="s",
                      AWS_DEFAULT_REGION="us-east-1")
    with pytest.raises(ChunkReadError, match=r"kvikio RemoteFile could not open it: .*"
                                             r"AWS_SESSION_TOKEN") as info:
        store.read_batch(["obj"], np.array([10]), np.array([5000]), device="gpu")
    assert info.value.key == "obj" and info.value.reason.endswith(
        f"(s3://{BUCKET}/{store.location.prefix}/obj)")  # type: ignore[attr-defined]


# ---------------------------------------------------------------- host-staged writes


def test_device_bytes_written_through_the_host_staged_backend(s3: str) -> None:
    """The device backend of a remote store takes device bytes (copied to the host, then one
    put), exclusive puts included; the store itself writes through its CPU backend."""
    store = GDSStore(f"s3://{BUCKET}/{uuid.uuid4().hex}", storage_options={
        "endpoint": s3, "access_key_id": "AKIDX", "secret_access_key": "s",
        "region": "us-east-1"})
    arr = cp.arange(100_000, dtype=cp.float32)
    backend = store._backend("gpu")  # type: ignore[attr-defined]
    path = store.location.path("c/0")  # type: ignore[attr-defined]
    backend.write_file(path, arr)
    with pytest.raises(FileExistsError):
        backend.write_file(path, cp.zeros(4, cp.uint8), exclusive=True)
    got = store.read_batch(["c/0"], device="gpu")
    assert cp.asnumpy(got.view(0)).tobytes() == cp.asnumpy(arr).tobytes()
    store.close()  # closes both backends; the next read builds them again
    assert store.read_batch(["c/0"], device="cpu").view(0).tobytes() == (
        cp.asnumpy(arr).tobytes())
