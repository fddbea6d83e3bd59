"""Faults of remote stores, injected by a real HTTP server on 127.0.0.1 (tests/_servers.py):
5xx answers, stalls, connections reset mid-body, short bodies, 403 vs 404. A fault that
clears is retried with backoff; one that persists is a ChunkReadError naming the key and the
URL within a bounded time (never garbage, never a hang). Credentials never appear in errors,
logs, repr or the GPU-path report."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("obstore")

import zarr
from _servers import RangeServer
from zarr.abc.store import RangeByteRequest
from zarr.core.buffer import default_buffer_prototype

import gds_zarr
from gds_zarr.errors import ChunkReadError
from gds_zarr.pipeline import PIPELINE_PATH
from gds_zarr.store import GDSStore

PROTO = default_buffer_prototype()
DATA = np.random.default_rng(0).bytes(256 << 10)
# Small bounds, so that a persistent fault fails fast: 2 retries, 0.5 s per request.
FAST = {"remote_retries": 2, "remote_timeout": 0.5}
BOUND_S = 10.0  # (retries + 1) x (timeout + 2 s backoff cap), with room for a busy machine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RangeServer]:
    root = tmp_path_factory.mktemp("faults")
    (root / "obj").write_bytes(DATA)
    server = RangeServer(root, stall_seconds=3.0)
    yield server
    server.close()


@pytest.fixture
def store(server: RangeServer) -> Iterator[GDSStore]:
    server.faults.clear()
    with gds_zarr.settings.set(**FAST):
        store = GDSStore(server.url)  # settings are read when the client is built: now
    yield store
    server.faults.clear()


def _get(store: GDSStore, key: str = "obj", byte_range: RangeByteRequest | None = None
         ) -> bytes | None:
    buf = store.get_sync(key, prototype=PROTO, byte_range=byte_range)
    return None if buf is None else buf.to_bytes()


@pytest.mark.parametrize("fault", ["500", "503", "stall", "reset", "short"])
def test_a_fault_that_clears_is_retried(store: GDSStore, server: RangeServer, fault: str) -> None:
    server.faults["/obj"] = [fault]
    before = server.total("GET")
    assert _get(store) == DATA
    assert _get(store, byte_range=RangeByteRequest(1000, 2000)) == DATA[1000:2000]
    assert server.total("GET") - before == 3  # the failed attempt, its retry, the range
    assert not server.faults["/obj"]


@pytest.mark.parametrize("fault", ["500", "503", "stall", "reset", "short"])
def test_a_persistent_fault_is_a_chunk_read_error_in_bounded_time(
        store: GDSStore, server: RangeServer, fault: str) -> None:
    server.faults["/obj"] = [fault] * 10
    t0 = time.monotonic()
    with pytest.raises(ChunkReadError) as info:
        _get(store)
    elapsed = time.monotonic() - t0
    assert elapsed < BOUND_S, elapsed
    assert info.value.key == "obj"
    assert f"{server.url}/obj" in str(info.value)


def test_denied_is_an_error_and_missing_is_none(store: GDSStore, server: RangeServer) -> None:
    server.faults["/obj"] = ["403"]
    with pytest.raises(ChunkReadError, match=r"'obj'.*access denied.*/obj"):
        _get(store)
    assert _get(store, "no/such/key") is None
    got = store.get_partial_values_sync(PROTO, [("obj", None), ("nothing", None)])
    assert got[0] is not None and got[0].to_bytes() == DATA and got[1] is None


def test_a_fault_in_a_batch_names_its_key(server: RangeServer, tmp_path: Path) -> None:
    """Through zarr and gds_zarr's pipeline: the chunk that keeps failing is named, the others
    are not read into garbage."""
    arr = server.root / "arr.zarr"
    zarr.create_array(zarr.storage.LocalStore(arr), shape=(8, 8), dtype="i4", chunks=(2, 8),
                      compressors=None)[...] = np.arange(64, dtype="i4").reshape(8, 8)
    server.faults["/arr.zarr/c/2/0"] = ["500"] * 10
    with gds_zarr.settings.set(**FAST):
        store = GDSStore(f"{server.url}/arr.zarr")
    with zarr.config.set({"codec_pipeline.path": PIPELINE_PATH}):
        z = zarr.open_array(store, mode="r")
        with pytest.raises(ChunkReadError, match=r"'c/2/0'.*arr\.zarr/c/2/0"):
            z[...]
        server.faults.clear()
        assert np.array_equal(z[...], np.arange(64, dtype="i4").reshape(8, 8))


def test_credentials_never_appear(server: RangeServer, caplog: pytest.LogCaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "hunter2-PASSWORD-xyz"
    aws_secret = "AWS-SECRET-abcdefgh"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws_secret)
    caplog.set_level(logging.DEBUG)
    with gds_zarr.settings.set(**FAST):
        store = GDSStore(f"http://user:{secret}@{server.url.removeprefix('http://')}")
        s3 = GDSStore("s3://bucket/x", storage_options={
            "endpoint": server.url, "access_key_id": "AKIDSECRETID1",
            "secret_access_key": aws_secret})
    server.faults["/obj"] = ["500"] * 10
    with pytest.raises(ChunkReadError) as e1:
        _get(store)
    with pytest.raises(ChunkReadError) as e2:  # the S3 client reaches the same faulty server
        s3.get_sync("obj", prototype=PROTO)
    texts = [str(e1.value), str(e2.value), repr(store), str(store), repr(s3), str(s3),
             repr(store.location), repr(s3.location), str(s3.gpu_read_path()),  # type: ignore[attr-defined]
             str(gds_zarr.info()), caplog.text]
    for text in texts:
        for s in (secret, aws_secret, "AKIDSECRETID1"):
            assert s not in text, (s, text)
    assert "user:" not in str(e1.value) and "obj" in str(e1.value)


def _closed_port() -> int:
    """A 127.0.0.1 port with nothing listening (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("kind", ["http", "s3"])
def test_connection_refused_names_the_cause_and_the_endpoint(kind: str) -> None:
    """Opening an array at an endpoint where nothing listens: the cause and the endpoint, not
    only obstore's 'error sending request'."""
    endpoint = f"127.0.0.1:{_closed_port()}"
    with gds_zarr.settings.set(**FAST):
        store = (GDSStore(f"http://{endpoint}/data.zarr") if kind == "http" else
                 GDSStore("s3://bucket/data.zarr", storage_options={
                     "endpoint": f"http://{endpoint}", "skip_signature": True,
                     "region": "us-east-1"}))
    with pytest.raises(ChunkReadError) as info:
        zarr.open_array(store, mode="r", zarr_format=3)
    assert info.value.key == "zarr.json"
    assert f"connection refused by {endpoint}" in str(info.value)
    assert f"{store.root}/zarr.json" in str(info.value)  # the object's URL


def test_a_stalled_server_is_a_timeout_naming_the_endpoint() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        endpoint = f"127.0.0.1:{silent.getsockname()[1]}"
        with gds_zarr.settings.set(remote_retries=0, remote_timeout=0.5):
            store = GDSStore(f"http://{endpoint}/data.zarr")
        with pytest.raises(ChunkReadError, match=f"timed out: no answer from {endpoint}"):
            _get(store, "zarr.json")


def test_an_unknown_host_is_name_not_resolved() -> None:
    with gds_zarr.settings.set(remote_retries=0, remote_timeout=5):
        store = GDSStore("http://no-such-host.invalid/data.zarr")  # .invalid never resolves
    with pytest.raises(ChunkReadError, match=r"name not resolved: no-such-host\.invalid"):
        _get(store, "zarr.json")


@pytest.mark.parametrize("key", ["zarr.json", "g/.zarray", ".zattrs", ".zgroup", ".zmetadata"])
def test_metadata_keys_are_not_called_chunks(key: str) -> None:
    with gds_zarr.settings.set(**FAST):
        store = GDSStore(f"http://127.0.0.1:{_closed_port()}/data.zarr")
    with pytest.raises(ChunkReadError) as info:
        _get(store, key)
    assert "chunk" not in str(info.value).split(":")[0]
    assert f"could not read metadata {key!r}" in str(info.value)
