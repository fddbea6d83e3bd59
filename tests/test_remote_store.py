"""GDSStore over object store URLs, against real servers started here on 127.0.0.1: moto's S3
server and a plain HTTP server with Range support (tests/_servers.py). No mocks.

Covered: zarr's StoreTests on S3; URL dispatch, options, env and redaction; batched reads and
their request counts; the pipeline equivalence matrix (sharded, unsharded, v2, missing chunks)
over S3 and HTTP against zarr's own reads of the same data.
"""

from __future__ import annotations

import pickle
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("obstore")
pytest.importorskip("moto")

import obstore
import zarr
import zarr.codecs as zc
from _servers import Proxy, RangeServer, create_bucket, start_moto
from pipeline_cases import DEFAULT, SELECTIONS, make, sample_data, v2_compressor
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import cpu, default_buffer_prototype
from zarr.storage import LocalStore
from zarr.testing.store import StoreTests

import gds_zarr
from gds_zarr.errors import ChunkReadError, InvalidKeyError, ReadOnlyError
from gds_zarr.pipeline import PIPELINE_PATH, stats
from gds_zarr.store import GDSStore
from gds_zarr.store._remote import RemoteGDSStore

BUCKET = "gds-zarr-test"
KEY_ID, SECRET = "AKIDGDSZARRTEST", "s3cr3t-GDSZARR-do-not-print"
PROTO = default_buffer_prototype()


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """moto's S3 server for this module, with one bucket; yields the endpoint URL."""
    with start_moto() as endpoint:
        create_bucket(endpoint, BUCKET)
        yield endpoint


def s3_options(endpoint: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "access_key_id": KEY_ID, "secret_access_key": SECRET,
            "region": "us-east-1"}


def s3_store(endpoint: str, prefix: str | None = None, **kw: Any) -> GDSStore:
    prefix = prefix or uuid.uuid4().hex
    return GDSStore(f"s3://{BUCKET}/{prefix}", storage_options=s3_options(endpoint), **kw)


def upload(endpoint: str, local: Path, prefix: str) -> None:
    """Copy every file under ``local`` to ``s3://BUCKET/prefix/`` (obstore, not gds_zarr)."""
    client = obstore.store.S3Store(BUCKET, client_options={"allow_http": True},
                                   **s3_options(endpoint))
    for f in local.rglob("*"):
        if f.is_file():
            obstore.put(client, f"{prefix}/{f.relative_to(local).as_posix()}", f.read_bytes())


# ---------------------------------------------------------------- zarr's conformance suite


class TestS3Store(StoreTests[GDSStore, cpu.Buffer]):
    store_cls = GDSStore
    buffer_cls = cpu.Buffer

    @pytest.fixture
    def store_kwargs(self, s3: str) -> dict[str, Any]:
        return {"root": f"s3://{BUCKET}/{uuid.uuid4().hex}", "storage_options": s3_options(s3)}

    def _client(self, store: GDSStore) -> Any:
        assert isinstance(store, RemoteGDSStore)
        return store.client

    async def get(self, store: GDSStore, key: str) -> cpu.Buffer:
        # Straight through obstore, so the store under test is not its own witness.
        got = obstore.get(self._client(store), store.location.path(key))  # type: ignore[attr-defined]
        return self.buffer_cls.from_bytes(bytes(got.bytes()))

    async def set(self, store: GDSStore, key: str, value: cpu.Buffer) -> None:
        obstore.put(self._client(store), store.location.path(key),  # type: ignore[attr-defined]
                    value.to_bytes())

    def test_store_repr(self, store: GDSStore) -> None:
        assert repr(store) == f"GDSStore('{store.root}', read_only=False)"
        assert SECRET not in repr(store) and KEY_ID not in repr(store)

    def test_store_supports_writes(self, store: GDSStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: GDSStore) -> None:
        assert store.supports_listing


# ---------------------------------------------------------------- the store itself


def test_url_makes_the_remote_subclass_and_local_paths_do_not(tmp_path: Path, s3: str) -> None:
    store = s3_store(s3, "x/y")
    assert isinstance(store, GDSStore) and isinstance(store, RemoteGDSStore)
    assert store.root == f"s3://{BUCKET}/x/y" and str(store) == store.root
    assert type(GDSStore(tmp_path)) is GDSStore
    local = GDSStore(f"file://{tmp_path}")
    assert type(local) is GDSStore and local.root == tmp_path and GDSStore(str(local)) == local
    with pytest.raises(ValueError, match="storage_options apply to"):
        GDSStore(tmp_path, storage_options={"region": "x"})
    with pytest.raises(ValueError, match="unsupported store URL scheme 'ftp'"):
        GDSStore("ftp://host/x")
    with pytest.raises(ValueError, match=r"'\.\.'"):
        GDSStore("s3://bucket/a/../b")
    clone = pickle.loads(pickle.dumps(store))
    assert type(clone) is RemoteGDSStore and clone == store
    ro = store.with_read_only(True)
    assert ro.read_only and ro.root == store.root and type(ro) is RemoteGDSStore


def test_missing_obstore_is_an_import_error_naming_the_package(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "obstore.store", None)
    with pytest.raises(ImportError, match=r"pip install 'obstore>=0.8'"):
        GDSStore("s3://bucket/x")


def test_endpoint_and_credentials_from_the_environment(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS_ENDPOINT_URL (an http:// one: no allow_http flag needed) and AWS_* credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    store = GDSStore(f"s3://{BUCKET}/{uuid.uuid4().hex}")
    store.set_sync("a", cpu.Buffer.from_bytes(b"hello"))
    assert store.get_sync("a", prototype=PROTO).to_bytes() == b"hello"
    assert not store.location.anonymous()  # type: ignore[attr-defined]


def test_no_credentials_reads_anonymously(s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    prefix = uuid.uuid4().hex
    urllib.request.urlopen(urllib.request.Request(  # a public object: ACL public-read
        f"{s3}/{BUCKET}/{prefix}/k", data=b"public", method="PUT",
        headers={"x-amz-acl": "public-read", "Content-Type": "application/octet-stream"}),
        timeout=30).read()
    s3_store(s3, prefix).set_sync("private", cpu.Buffer.from_bytes(b"private"))
    anon = GDSStore(f"s3://{BUCKET}/{prefix}", storage_options={"endpoint": s3})
    assert anon.location.anonymous()  # type: ignore[attr-defined]
    assert anon.get_sync("k", prototype=PROTO).to_bytes() == b"public"  # unsigned GET worked
    # Denied (403) is an error naming key and URL; missing (404) is None.
    with pytest.raises(ChunkReadError, match=r"'private'.*access denied.*s3://.*/private"):
        anon.get_sync("private", prototype=PROTO)
    assert anon.get_sync("nothing-here", prototype=PROTO) is None
    signed = GDSStore(f"s3://{BUCKET}/{prefix}", storage_options={"endpoint": s3, "anon": False})
    assert not signed.location.anonymous()  # type: ignore[attr-defined]


def test_keys_are_validated_and_read_only_is_enforced(s3: str) -> None:
    store = s3_store(s3)
    for bad in ("../x", "/abs", "a//b", "a/./b", "a\\b", "a\x00b"):
        with pytest.raises(InvalidKeyError):
            store.get_sync(bad, prototype=PROTO)
        with pytest.raises(InvalidKeyError):
            store.set_sync(bad, cpu.Buffer.from_bytes(b"x"))
    ro = store.with_read_only(True)
    with pytest.raises(ReadOnlyError):
        ro.set_sync("k", cpu.Buffer.from_bytes(b"x"))
    with pytest.raises(ReadOnlyError):
        ro.delete_sync("k")


async def test_batched_reads_clamp_like_localstore(s3: str, tmp_path: Path) -> None:
    """Every request kind, past-the-end ranges included, answers what LocalStore answers."""
    store = s3_store(s3)
    local = LocalStore(tmp_path)
    data = bytes(range(256)) * 40  # 10240 bytes
    for s in (store, local):
        await s.set("obj", cpu.Buffer.from_bytes(data))
        await s.set("empty", cpu.Buffer.from_bytes(b""))
    from zarr.abc.store import OffsetByteRequest

    reqs: list[tuple[str, Any]] = [
        ("obj", None), ("obj", RangeByteRequest(10, 20)), ("obj", RangeByteRequest(10000, 20000)),
        ("obj", RangeByteRequest(20000, 30000)), ("obj", OffsetByteRequest(10200)),
        ("obj", OffsetByteRequest(50000)), ("obj", SuffixByteRequest(7)),
        ("obj", SuffixByteRequest(99999)), ("obj", RangeByteRequest(5, 5)), ("empty", None),
        ("missing", None), ("missing", RangeByteRequest(0, 10)),
    ]
    got = await store.get_partial_values(PROTO, reqs)
    ref = [await local.get(k, prototype=PROTO, byte_range=r) for k, r in reqs]
    assert [None if b is None else b.to_bytes() for b in got] == \
        [None if b is None else b.to_bytes() for b in ref]
    # Overlapping reads (a size bound splits them) that run past the end of the object, and
    # absurd ranges (a corrupt shard index): clamped as LocalStore clamps.
    for max_size in (1000, 1 << 20):
        batch = store.read_batch(["obj"] * 4, np.array([0, 9000, 15000, 1 << 61]),
                                 np.array([9500, 20000, 30000, (1 << 62) - 1]), device="cpu",
                                 max_size=max_size)
        assert batch.sizes.tolist() == [9500, 1240, 0, 0]
        assert bytes(batch.view(1)) == data[9000:] and bytes(batch.view(0)) == data[:9500]
        batch = store.read_batch(["obj"] * 2, np.array([0, 15000]), np.array([20000, 30000]),
                                 device="cpu", max_size=max_size)
        assert batch.sizes.tolist() == [len(data), 0] and bytes(batch.view(0)) == data


async def test_many_ranges_of_one_object_are_coalesced(s3: str) -> None:
    store = s3_store(s3)
    data = np.random.default_rng(1).bytes(1 << 20)
    await store.set("shard", cpu.Buffer.from_bytes(data))
    ranges = [RangeByteRequest(o, o + 1000) for o in range(0, 1 << 20, 4096)]  # 256 ranges
    store.io_stats().reset()
    got = await store.get_partial_values(PROTO, [("shard", r) for r in ranges])
    assert [b.to_bytes() for b in got] == [data[r.start:r.end] for r in ranges]
    assert store.io_stats().reads == 1  # 3 KiB gaps < 64 KiB: one ranged GET
    with gds_zarr.settings.set(coalesce_max_gap=0):
        store.io_stats().reset()
        await store.get_partial_values(PROTO, [("shard", r) for r in ranges])
        assert store.io_stats().reads == len(ranges)


@pytest.mark.parametrize("server", ["s3", "http"])
def test_whole_objects_with_a_size_hint_are_one_request_each(
        server: str, s3: str, http: RangeServer, http_root: Path) -> None:
    """With the pipeline's size hint a whole object is one ranged GET that the server clamps;
    empty objects, objects of exactly the hint and longer ones still read whole, missing
    ones as absent; counted by a proxy (S3: moto; HTTP: the Range server)."""
    hint = 100
    sizes = {"empty": 0, "small": 10, "exact": hint, "hint+1": hint + 1, "big": 3 * hint + 7}
    data = {k: np.random.default_rng(n).bytes(n) for k, n in sizes.items()}
    prefix = f"hinted-{uuid.uuid4().hex}"
    for k, v in data.items():
        (http_root / prefix / k).parent.mkdir(parents=True, exist_ok=True)
        (http_root / prefix / k).write_bytes(v)
    upload(s3, http_root / prefix, prefix)
    proxy = Proxy(s3 if server == "s3" else http.url)
    try:
        store = (GDSStore(f"s3://{BUCKET}/{prefix}", read_only=True,
                          storage_options={**s3_options(s3), "endpoint": proxy.url})
                 if server == "s3" else GDSStore(f"{proxy.url}/{prefix}"))
        keys = [*data, "missing"]
        n = len(keys)
        before = proxy.total()
        batch = store.read_batch(keys, np.zeros(n, np.int64), np.full(n, -1, np.int64),
                                 device="cpu", size_hint=hint)
        sent = proxy.total() - before
    finally:
        proxy.close()
    got = [bytes(batch.data[o: o + z]) if p else None
           for o, z, p in zip(batch.offsets.tolist(), batch.sizes.tolist(),
                              batch.present.tolist(), strict=True)]
    assert got == [*data.values(), None]
    # One request each; a second for the empty object (a range of nothing is refused) and
    # for each object at least as long as the hint (read again whole: one version of it).
    assert sent == n + 1 + 3, sent


# ---------------------------------------------------------------- servers and the pipeline


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("http")


@pytest.fixture(scope="module")
def http(http_root: Path) -> Iterator[RangeServer]:
    server = RangeServer(http_root)
    yield server
    server.close()


Case = tuple[str, dict[str, Any], np.ndarray]


def _cases() -> dict[str, Any]:
    return {
        "sharded": dict(chunks=(3, 4), shards=(6, 8), write=np.s_[:12, :], fill_value=np.nan,
                        compressors=zc.ZstdCodec()),
        "sharded_index_start": dict(
            chunks=(6, 8), serializer=zc.ShardingCodec(chunk_shape=(3, 4), index_location="start",
                                                       codecs=(zc.BytesCodec(), zc.ZstdCodec())),
            compressors=None, write=np.s_[:12, :6], fill_value=np.nan),
        "unsharded": dict(chunks=(4, 5), write=np.s_[:, :10], fill_value=np.nan,
                          compressors=zc.GzipCodec()),
        "v2": dict(chunks=(4, 3), zarr_format=2, compressors=v2_compressor("blosc"),
                   fill_value=0, write=np.s_[:16, :]),
    }


CASES = _cases()


def _reference(local: str, select: Any) -> np.ndarray:
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        return np.asarray(select(zarr.open_array(LocalStore(local, read_only=True), mode="r")))


def _ours(store: GDSStore, select: Any) -> np.ndarray:
    with zarr.config.set({"codec_pipeline.path": PIPELINE_PATH}):
        return np.asarray(select(zarr.open_array(store, mode="r")))


@pytest.fixture(scope="module")
def arrays(tmp_path_factory: pytest.TempPathFactory, s3: str, http_root: Path) -> dict[str, str]:
    """Every case written once locally, then uploaded to S3 and served over HTTP."""
    out = {}
    for name, kw in CASES.items():
        kw = dict(kw)
        dtype = "<f8" if kw.get("zarr_format") == 2 else "float32"
        data = sample_data((23, 17), dtype)
        local = tmp_path_factory.mktemp(name) / "a.zarr"
        make(str(local), data, **kw)
        upload(s3, local, f"matrix/{name}")
        target = http_root / "matrix" / name
        target.mkdir(parents=True)
        for f in local.rglob("*"):
            if f.is_file():
                dest = target / f.relative_to(local)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(f.read_bytes())
        out[name] = str(local)
    return out


@pytest.mark.parametrize("where", ["s3", "http"])
@pytest.mark.parametrize("name", list(CASES))
def test_pipeline_matrix_over_remote_stores(arrays: dict[str, str], s3: str, http: RangeServer,
                                            name: str, where: str) -> None:
    """gds_zarr's pipeline over S3 and HTTP returns what zarr reads from the same data locally,
    bit for bit, through the fast path (missing chunks read as the fill value)."""
    store = (s3_store(s3, f"matrix/{name}", read_only=True) if where == "s3"
             else GDSStore(f"{http.url}/matrix/{name}"))
    for key in ("full", "steps", "int", "oindex_int", "vindex_bool"):
        ref = _reference(arrays[name], SELECTIONS[key])
        stats.reset()
        got = _ours(store, SELECTIONS[key])
        assert got.dtype == ref.dtype and got.shape == ref.shape
        assert got.tobytes() == ref.tobytes(), (name, where, key)
        assert stats.fast_reads >= 1 and stats.delegated_reads == 0, stats.last_delegation


def test_http_store_is_read_only_and_cannot_list(http: RangeServer, arrays: dict[str, str]
                                                 ) -> None:
    store = GDSStore(f"{http.url}/matrix/sharded")
    assert store.read_only and not store.supports_listing and not store.supports_writes
    assert store.get_sync("missing/key", prototype=PROTO) is None
    assert store.get_sync("zarr.json", prototype=PROTO) is not None
    with pytest.raises(ReadOnlyError):
        store.set_sync("k", cpu.Buffer.from_bytes(b"x"))
    with pytest.raises(NotImplementedError, match="cannot list"):
        store._walk("")  # type: ignore[attr-defined]


def test_a_whole_read_is_a_few_request_rounds(arrays: dict[str, str], http: RangeServer,
                                              s3: str) -> None:
    """Counted on the servers: a full read of 4x3 shards (6 exist) of 2x2 inner chunks is one
    round of index reads, one request per shard, whose prefetched tails (whole shards here)
    answer the chunk reads; without prefetching, a second round of coalesced chunk reads, one
    request per existing shard: never one request per chunk. An unsharded read is one GET per
    chunk, all in one batch."""
    nshards = 2 * 3  # rows 12+ were never written: 2 of 4 shard rows exist, 3 shard columns
    for prefetch, want in ((None, 4 * 3), (0, 4 * 3 + nshards)):
        with zarr.config.set({"codec_pipeline.path": PIPELINE_PATH}), \
                gds_zarr.settings.set(remote_prefetch=prefetch):
            store = GDSStore(f"{http.url}/matrix/sharded")
            z = zarr.open_array(store, mode="r")  # metadata read before counting
            before = http.total()
            stats.reset()
            got = z[...]
        assert http.total() - before == want, (prefetch, http.total() - before)
        assert stats.store_reads == 2 and stats.delegated_reads == 0, stats
        assert got.tobytes() == _reference(arrays["sharded"], SELECTIONS["full"]).tobytes()
    # S3, counted by a proxy in front of moto.
    proxy = Proxy(s3)
    try:
        remote = GDSStore(f"s3://{BUCKET}/matrix/unsharded", read_only=True,
                          storage_options={**s3_options(s3), "endpoint": proxy.url})
        with zarr.config.set({"codec_pipeline.path": PIPELINE_PATH}):
            z = zarr.open_array(remote, mode="r")
            before = proxy.total()
            stats.reset()
            z[...]
        chunks = 6 * 4  # (23, 17) in (4, 5) chunks
        assert proxy.total() - before == chunks  # one GET per chunk (10 missing: 404s)
        assert stats.store_reads == 1 and stats.delegated_reads == 0, stats
    finally:
        proxy.close()


def test_convert_from_s3_to_a_local_path(arrays: dict[str, str], s3: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``gds-zarr convert s3://... local.zarr``: endpoint and credentials from the AWS_*
    environment, as a user would set them."""
    from gds_zarr.cli import main

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    out = tmp_path / "out.zarr"
    assert main(["convert", f"s3://{BUCKET}/matrix/v2", str(out), "--no-progress",
                 "--chunk-shape", "4,4", "--shard-shape", "8,8"]) == 0, capsys.readouterr()
    ref = _reference(arrays["v2"], SELECTIONS["full"])
    got = zarr.open_array(LocalStore(out, read_only=True), mode="r")
    assert got.metadata.zarr_format == 3 and got.shards == (8, 8)
    assert got[...].tobytes() == ref.tobytes()


def test_gpu_read_path_says_which_backend_and_why(no_gpu_libs: None) -> None:
    """Decided without a GPU: GCS/Azure and options-configured S3 always stage on the host;
    kvikio missing stages everything; ``info`` carries the line."""
    cases = {
        "gs://bucket/x": (None, "S3 and HTTP only, not gcs"),
        "az://container/x": ({"account_name": "acct", "skip_signature": True},
                             "S3 and HTTP only, not azure"),
        "s3://bucket/x": ({"region": "eu-west-1"}, "storage_options set region"),
        "https://example.org/a.zarr": (None, "kvikio has no RemoteFile"),
    }
    for url, (options, why) in cases.items():
        backend, reason = GDSStore(url, storage_options=options).gpu_read_path()  # type: ignore[attr-defined]
        assert backend == "obstore + one host-to-device copy per batch", url
        assert why in reason, (url, reason)
    assert "remote io:    obstore" in gds_zarr.info(refresh=True).format_text()


def test_prefetched_tails_answer_chunk_reads_and_writes_drop_them(
        http: RangeServer, http_root: Path, s3: str) -> None:
    """A suffix read (a shard index) brings ``remote_prefetch`` bytes of the tail; bounded reads
    inside it cost no request, reads outside it do; a suffix read always asks the server; a
    write through the store drops the tail."""
    data = np.random.default_rng(3).bytes(10240)
    (http_root / "tail").write_bytes(data)
    with gds_zarr.settings.set(remote_prefetch=1000):
        store = GDSStore(http.url)

        def read(starts: list[int], stops: list[int]) -> tuple[list[bytes], int]:
            before = http.total()
            b = store.read_batch(["tail"] * len(starts), np.array(starts), np.array(stops),
                                 device="cpu")
            return [bytes(b.view(i)) for i in range(len(b))], http.total() - before

        assert read([-16], [-1]) == ([data[-16:]], 1)
        assert read([9300, 10000, 10200], [9400, 10100, 99999]) == (
            [data[9300:9400], data[10000:10100], data[10200:]], 0)
        assert read([100, 9200], [200, 9300]) == ([data[100:200], data[9200:9300]], 1)
        assert read([-16], [-1]) == ([data[-16:]], 1)  # never answered from the tail
    s3s = s3_store(s3)
    s3s.set_sync("k", cpu.Buffer.from_bytes(b"a" * 100))
    assert bytes(s3s.read_batch(["k"], np.array([-10]), np.array([-1]), device="cpu").view(0)) \
        == b"a" * 10
    s3s.set_sync("k", cpu.Buffer.from_bytes(b"b" * 100))
    assert bytes(s3s.read_batch(["k"], np.array([0]), np.array([5]), device="cpu").view(0)) \
        == b"b" * 5  # the old tail was dropped by the write


def test_gpu_backend_sizes_objects_from_tails_else_one_head_round(
        http: RangeServer, http_root: Path) -> None:
    """The kvikio RemoteFile backend needs object sizes before its preads: objects whose
    index was just read are sized from their tails, the rest by HEADs in one round; missing
    ones are -1. (CPU-side logic; the preads themselves need a GPU: tests/test_remote_gpu.py.)"""
    from gds_zarr.io._remote_gpu import KvikioRemoteIOBackend

    for name, n in (("s1", 5000), ("s2", 7000)):
        (http_root / name).write_bytes(bytes(n))
    store = GDSStore(http.url)
    cpu = store._backend("cpu")  # type: ignore[attr-defined]
    gpu = KvikioRemoteIOBackend(store.location, cpu)  # type: ignore[attr-defined]
    store.read_batch(["s1"], np.array([-16]), np.array([-1]), device="cpu")  # tail of s1
    before = http.total("HEAD")
    assert gpu._sizes(["s1", "s2", "nope"]).tolist() == [5000, 7000, -1]
    assert http.total("HEAD") - before == 2  # s2 and nope; s1 was known


@pytest.mark.parametrize("server", ["http", "s3"])
def test_read_many_and_the_loader_over_remote_stores(server: str, http: RangeServer,
                                                     http_root: Path, s3: str) -> None:
    """The training workload over a bucket: ``read_many`` equals zarr's reads window by window
    in ONE request round (each touched shard's index, whose prefetched tail holds its chunks),
    and ``WindowLoader`` batches equal the windows it says it read."""
    prefix = f"windows-{uuid.uuid4().hex}"
    data = sample_data((64, 48), "float32")
    make(str(http_root / prefix / "a.zarr"), data, chunks=(4, 6), shards=(16, 12),
         compressors=zc.ZstdCodec())
    proxy = Proxy(s3 if server == "s3" else http.url)
    try:
        if server == "s3":
            upload(s3, http_root / prefix, prefix)
            store = GDSStore(f"s3://{BUCKET}/{prefix}/a.zarr", read_only=True,
                             storage_options={**s3_options(s3), "endpoint": proxy.url})
        else:
            store = GDSStore(f"{proxy.url}/{prefix}/a.zarr")
        z = zarr.open_array(store, mode="r")
        corners = [(0, 0), (5, 40), (30, 11), (50, 30), (14, 20)]
        sels = [np.s_[r: r + 10, c: c + 7] for r, c in corners]
        shards = {(r // 16, c // 12) for rr, cc in corners
                  for r in (rr, rr + 9) for c in (cc, cc + 6)}
        before = proxy.total()
        got = gds_zarr.read_many(z, sels)
        assert proxy.total() - before == len(shards)
        for g, sel in zip(got, sels, strict=True):
            assert g.tobytes() == data[sel].tobytes()
        with gds_zarr.WindowLoader(z, window=(8, 8), batch_size=4, n_windows=12,
                                   seed=0) as loader:
            corners = loader.corners().tolist()
            batches = list(loader)
        assert len(batches) == 3
        for k, batch in enumerate(batches):
            for w, (r, c) in zip(batch, corners[4 * k: 4 * k + 4], strict=True):
                assert w.tobytes() == data[r: r + 8, c: c + 8].tobytes()
    finally:
        proxy.close()


def test_gpu_backend_reads_objects_of_unknown_size_on_the_host() -> None:
    """The kvikio backend's preads need object sizes (a HEAD round): whole chunks and shard
    indexes are read on the host in one round of GETs and copied once; ranges in prefetched
    tails need no request; ranges of other objects go to kvikio."""
    from gds_zarr.io._remote_gpu import HOST_STAGED_MAX, staged_on_host

    a = np.array
    no_tail = a([-1, -1])
    hint = 1 << 20
    assert staged_on_host(a([0, 0]), a([-1, -1]), no_tail, hint)  # two whole chunks
    assert staged_on_host(a([-4096, 0]), a([-1, -1]), no_tail, hint)  # an index, a chunk
    assert staged_on_host(a([100, 0]), a([200, -1]), a([50, -1]), hint)  # in a tail, a chunk
    assert not staged_on_host(a([100, 0]), a([200, -1]), no_tail, hint)  # a range: kvikio
    assert not staged_on_host(a([10]), a([200]), a([50]), hint)  # starts before the tail
    # Whole objects of unknown or large size, and long suffixes, go to kvikio.
    assert not staged_on_host(a([0]), a([-1]), a([-1]), None)
    assert not staged_on_host(a([0]), a([-1]), a([-1]), HOST_STAGED_MAX + 1)
    assert not staged_on_host(a([-HOST_STAGED_MAX - 1]), a([-1]), a([-1]), hint)
    assert not staged_on_host(a([5]), a([-1]), a([-1]), hint)  # from an offset to the end


@pytest.mark.parametrize("consolidated", [True, False])
def test_xarray_round_trip_through_s3(s3: str, consolidated: bool) -> None:
    """The issue's user story: ``xr.open_zarr(GDSStore("s3://..."))`` with gds_zarr enabled
    equals the dataset written (groups, coordinates, attributes; listing when the metadata is
    not consolidated)."""
    xr = pytest.importorskip("xarray")
    ds = xr.Dataset(
        {"t": (("time", "lat"), sample_data((6, 10), "float32")),
         "q": (("lat",), np.arange(10, dtype="i4"))},
        coords={"time": np.arange(6), "lat": np.linspace(-45, 45, 10)},
        attrs={"title": "remote"})
    store = s3_store(s3)
    ds.chunk({"time": 2}).to_zarr(store, consolidated=consolidated, zarr_format=3)
    with gds_zarr.enable(device="cpu"):
        stats.reset()
        back = xr.open_zarr(s3_store(s3, store.location.prefix, read_only=True),  # type: ignore[attr-defined]
                            consolidated=consolidated).load()
    xr.testing.assert_identical(back, ds)
    assert stats.fast_reads >= 3 and stats.delegated_reads == 0, stats  # t, q and coordinates


async def test_remote_reads_never_block_the_event_loop(tmp_path: Path) -> None:
    """A shard-index read of a remote store waits for the network in a worker thread: other
    coroutines of zarr's loop (dask threads' reads, say) keep running meanwhile."""
    import asyncio

    data = sample_data((16, 16), "float32")
    make(str(tmp_path / "a.zarr"), data, chunks=(4, 4), shards=(8, 8))
    server = RangeServer(tmp_path, stall_seconds=0.5)
    try:
        server.faults["a.zarr/c/0/0"] = ["stall"]  # the first request: the index of shard c/0/0
        with gds_zarr.enable(device="cpu"):
            z = await zarr.api.asynchronous.open_array(
                store=GDSStore(f"{server.url}/a.zarr", read_only=True), mode="r")
            ticks = 0
            done = asyncio.Event()

            async def tick() -> None:
                nonlocal ticks
                while not done.is_set():
                    ticks += 1
                    await asyncio.sleep(0.01)

            ticker = asyncio.create_task(tick())
            got = await z.getitem((slice(0, 4), slice(0, 4)))
            done.set()
            await ticker
        np.testing.assert_array_equal(got, data[:4, :4])
        assert ticks >= 20  # 0.5 s of stall: the loop ran on (blocked, it would be ~1)
    finally:
        server.close()


@pytest.mark.parametrize("server", ["s3", "http"])
def test_host_staged_gpu_batches_are_placed_for_nvcomp(server: str, s3: str, http: RangeServer,
                                                        http_root: Path) -> None:
    """The host-staged device backends ask the CPU backend for a batch laid out for nvCOMP:
    every request its own slot with its decode input aligned, from coalesced ranges, whole
    objects, prefetched tails and duplicates alike; missing and empty requests as before."""
    from gds_zarr.planning.staging import PAYLOADS

    rng = np.random.default_rng(4)
    data = {k: rng.bytes(n) for k, n in (("shard", 60_000), ("a", 777), ("b", 5000))}
    prefix = f"placed-{uuid.uuid4().hex}"
    for k, v in data.items():
        (http_root / prefix / k).parent.mkdir(parents=True, exist_ok=True)
        (http_root / prefix / k).write_bytes(v)
    upload(s3, http_root / prefix, prefix)
    store = s3_store(s3, prefix) if server == "s3" else GDSStore(f"{http.url}/{prefix}")
    backend = store._backend("cpu")  # the host backend the device backends stage through
    # Inner chunks back to back (one coalesced GET), one after a gap, a duplicate, an empty
    # range, whole objects by the size hint, a missing object, the shard index (a suffix).
    keys = [store.location.path(k)  # type: ignore[attr-defined]
            for k in ["shard"] * 6 + ["a", "b", "missing", "shard"]]
    starts = np.array([0, 1001, 2003, 9000, 1001, 5, 0, 0, 0, -16])
    stops = np.array([1001, 2003, 3007, 9100, 2003, 5, -1, -1, -1, -1])
    want = [data["shard"][a:b] for a, b in zip(starts[:6], stops[:6], strict=True)]
    want += [data["a"], data["b"], None, data["shard"][-16:]]
    for payload in (PAYLOADS["zstd"], PAYLOADS["zlib"], PAYLOADS["lz4"]):
        for rounds in range(2):  # the second read finds the index's tail prefetched
            b = backend.read_batch(keys, starts, stops, size_hint=8192, place=payload)
            got = [bytes(b.view(i)) if b.present[i] else None for i in range(len(keys))]
            assert got == want, (payload, rounds)
            live = b.sizes > 0
            assert ((b.offsets[live] + payload.offset) % payload.align == 0).all()
            assert b.offsets[4] == b.offsets[1]  # the duplicate shares its slot
        plain = backend.read_batch(keys, starts, stops, size_hint=8192)
        assert [bytes(plain.view(i)) if plain.present[i] else None
                for i in range(len(keys))] == want
