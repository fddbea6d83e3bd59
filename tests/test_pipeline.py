"""GDSCodecPipeline: registration, zarr-version behaviour, delegation, errors and writes."""

from __future__ import annotations

import os
import pickle
import warnings
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.codecs as zc
from zarr.storage import LocalStore, MemoryStore

from gds_zarr.errors import ChunkDecodeError, ShardIndexError
from gds_zarr.pipeline import PIPELINE_PATH, GDSCodecPipeline, stats
from gds_zarr.store import GDSStore

DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"
ZARR_32 = tuple(int(p) for p in zarr.__version__.split(".")[:2]) >= (3, 2)


def _create(store: Any, data: np.ndarray, pipeline: str = DEFAULT, **kw: Any) -> Any:
    with warnings.catch_warnings(), zarr.config.set({"codec_pipeline.path": pipeline}):
        warnings.simplefilter("ignore")
        z = zarr.create_array(store, shape=data.shape, dtype=data.dtype, overwrite=True, **kw)
        z[...] = data
    return z


def _open(store: Any, pipeline: str = PIPELINE_PATH) -> Any:
    with zarr.config.set({"codec_pipeline.path": pipeline}):
        return zarr.open_array(store, mode="r")


def test_config_path_resolves_to_the_pipeline() -> None:
    from zarr.registry import get_pipeline_class

    with zarr.config.set({"codec_pipeline.path": PIPELINE_PATH}):
        assert get_pipeline_class() is GDSCodecPipeline
    with zarr.config.set({"codec_pipeline.path":
                          "gds_zarr.pipeline._pipeline.GDSCodecPipeline"}):
        assert get_pipeline_class() is GDSCodecPipeline


def test_entry_point_is_declared() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="zarr.codec_pipeline") if e.name == PIPELINE_PATH]
    assert ep.load() is GDSCodecPipeline


def test_array_uses_pipeline_and_pickles(tmp_path: Any) -> None:
    data = np.arange(60, dtype="f4").reshape(6, 10)
    _create(LocalStore(str(tmp_path / "a.zarr")), data, chunks=(4, 4))
    z = _open(LocalStore(str(tmp_path / "a.zarr")))
    assert isinstance(z.async_array.codec_pipeline, GDSCodecPipeline)
    z2 = pickle.loads(pickle.dumps(z))
    np.testing.assert_array_equal(z2[...], data)


def test_memory_store_and_fast_path_counter() -> None:
    store = MemoryStore()
    data = np.arange(100, dtype="i8").reshape(10, 10)
    _create(store, data, chunks=(3, 3))
    stats.reset()
    np.testing.assert_array_equal(_open(store)[...], data)
    assert stats.fast_reads == 1 and stats.delegated_reads == 0
    assert stats.chunks_decoded == 16 and stats.store_reads == 1


def test_stage_times_add_up(tmp_path: Any) -> None:
    """The timing counters a profile reads: reads and decodes happen inside the fast path's
    time; with one batch (no read-ahead) they cannot together exceed it."""
    data = np.arange(256 * 256, dtype="f4").reshape(256, 256)
    _create(LocalStore(str(tmp_path / "a.zarr")), data, chunks=(32, 32), shards=(128, 128))
    stats.reset()
    z = _open(GDSStore(tmp_path / "a.zarr"))
    np.testing.assert_array_equal(z[...], data)
    assert stats.batches == 1 and stats.store_reads == 2  # the indexes, then the chunks
    assert 0 < stats.read_seconds and 0 < stats.decode_seconds
    assert stats.read_seconds + stats.decode_seconds <= stats.fast_read_seconds
    stats.reset()
    assert stats.fast_read_seconds == stats.read_seconds == stats.decode_seconds == 0


def test_unsupported_chains_are_delegated_and_correct(tmp_path: Any) -> None:
    path = str(tmp_path / "s.zarr")
    strings = np.array(["a", "bb", "ccc", "", "e", "f"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _create(LocalStore(path), strings, chunks=(4,))
    stats.reset()
    assert _open(LocalStore(path))[...].tolist() == strings.tolist()
    assert stats.delegated_reads == 1 and "data type" in stats.last_delegation

    nested = zc.ShardingCodec(chunk_shape=(4, 4), codecs=(
        zc.ShardingCodec(chunk_shape=(2, 2)),))
    path = str(tmp_path / "n.zarr")
    data = np.arange(64, dtype="u2").reshape(8, 8)
    _create(LocalStore(path), data, chunks=(8, 8), serializer=nested, compressors=None)
    stats.reset()
    np.testing.assert_array_equal(_open(LocalStore(path))[1:7, ::3], data[1:7, ::3])
    assert stats.delegated_reads >= 1 and "nested sharding" in stats.last_delegation


@pytest.mark.skipif(not ZARR_32, reason="GetResult and read_missing_chunks need zarr >= 3.2")
def test_read_missing_chunks_false_raises(tmp_path: Any) -> None:
    path = str(tmp_path / "a.zarr")
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        z = zarr.create_array(LocalStore(path), shape=(8,), chunks=(4,), dtype="i4")
        z[:4] = 1
    for pipeline in (DEFAULT, PIPELINE_PATH):
        with zarr.config.set({"codec_pipeline.path": pipeline,
                              "array.read_missing_chunks": False}):
            a = zarr.open_array(LocalStore(path), mode="r")
            np.testing.assert_array_equal(a[:4], 1)
            with pytest.raises(Exception, match="c/1"):
                a[...]


@pytest.mark.skipif(not ZARR_32, reason="GetResult needs zarr >= 3.2")
async def test_read_returns_get_results(tmp_path: Any) -> None:
    path = str(tmp_path / "a.zarr")
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        z = zarr.create_array(LocalStore(path), shape=(8,), chunks=(4,), dtype="i4")
        z[:4] = 1
    a = _open(LocalStore(path)).async_array
    from zarr.core.array_spec import ArrayConfig, ArraySpec
    from zarr.core.buffer import default_buffer_prototype

    spec = ArraySpec(shape=(4,), dtype=a.metadata.data_type, fill_value=0,
                     config=ArrayConfig.from_dict({}), prototype=default_buffer_prototype())
    out = default_buffer_prototype().nd_buffer.empty(shape=(8,), dtype=np.dtype("i4"))
    sp = a.store_path
    results = await a.codec_pipeline.read(
        [(sp / "c/0", spec, (slice(0, 4),), (slice(0, 4),), True),
         (sp / "c/1", spec, (slice(0, 4),), (slice(4, 8),), True)], out)
    assert [r["status"] for r in results] == ["present", "missing"]


def test_corrupt_chunk_names_key(tmp_path: Any) -> None:
    path = tmp_path / "a.zarr"
    _create(LocalStore(str(path)), np.arange(16, dtype="f8"), chunks=(8,),
            compressors=zc.ZstdCodec())
    (path / "c" / "1").write_bytes(b"\x28\xb5\x2f\xfd garbage garbage")
    with pytest.raises(ChunkDecodeError, match="c/1"):
        _open(LocalStore(str(path)))[...]


def test_crc32c_mismatch_is_an_error(tmp_path: Any) -> None:
    path = tmp_path / "a.zarr"
    _create(LocalStore(str(path)), np.arange(16, dtype="i4"), chunks=(8,),
            compressors=zc.Crc32cCodec())
    raw = bytearray((path / "c" / "0").read_bytes())
    raw[0] ^= 0xFF
    (path / "c" / "0").write_bytes(bytes(raw))
    with pytest.raises(ChunkDecodeError, match="c/0"):
        _open(LocalStore(str(path)))[...]


def test_shard_index_past_end_of_file(tmp_path: Any) -> None:
    path = tmp_path / "a.zarr"
    codec = zc.ShardingCodec(chunk_shape=(2,), codecs=(zc.BytesCodec(),),
                             index_codecs=(zc.BytesCodec(),), index_location="start")
    _create(LocalStore(str(path)), np.arange(8, dtype="i4"), chunks=(8,), serializer=codec,
            compressors=None)
    shard = path / "c" / "0"
    raw = bytearray(shard.read_bytes())
    raw[16:24] = (10_000).to_bytes(8, "little")  # inner chunk 1 offset: far past the end
    shard.write_bytes(bytes(raw))
    with pytest.raises(ShardIndexError, match="c/0"):
        _open(LocalStore(str(path)))[...]


@pytest.mark.parametrize("sharded", [False, True])
def test_writes_match_zarr(tmp_path: Any, sharded: bool) -> None:
    """Partial-chunk and sharded writes through the pipeline equal zarr's, file for file."""
    data = np.random.default_rng(1).standard_normal((20, 13)).astype("f4")
    kw: dict[str, Any] = {"chunks": (4, 5), "fill_value": np.nan}
    if sharded:
        kw["shards"] = (8, 10)
    stores = {}
    for name, pipeline in (("ref", DEFAULT), ("gds", PIPELINE_PATH)):
        path = str(tmp_path / f"{name}.zarr")
        with warnings.catch_warnings(), zarr.config.set({"codec_pipeline.path": pipeline}):
            warnings.simplefilter("ignore")
            z = zarr.create_array(LocalStore(path), shape=data.shape, dtype="f4", **kw)
            z[3:17, 2:11] = data[3:17, 2:11]     # partial chunks and shards
            z[5, :] = -1.0
            z.oindex[[0, 19], [1, 12]] = 2.0
            z[8:16, 0:10] = data[8:16, 0:10]     # a whole shard
        stores[name] = path
    files = {
        n: sorted(os.path.relpath(os.path.join(d, f), p) for d, _, fs in os.walk(p) for f in fs)
        for n, p in stores.items()}
    assert files["ref"] == files["gds"]
    for rel in files["ref"]:
        with open(os.path.join(stores["ref"], rel), "rb") as a, \
                open(os.path.join(stores["gds"], rel), "rb") as b:
            assert a.read() == b.read(), rel
    got = _open(LocalStore(stores["gds"]))[...]
    ref = _open(LocalStore(stores["ref"]), DEFAULT)[...]
    assert got.tobytes() == ref.tobytes()


@pytest.mark.parametrize("order,endian,axes", [("C", "<", None), ("F", ">", None),
                                               ("C", ">", (2, 0, 1))])
def test_gpu_scatter_arguments_match_numpy(order: str, endian: str, axes: Any) -> None:
    """The arguments the pipeline hands the GPU scatter, checked with its numpy twin."""
    from gds_zarr.decode._scatter_gpu import _scatter_reference
    from gds_zarr.decode.chain import ArrayStep, ChainPlan
    from gds_zarr.pipeline._read import chunk_axes_shape, scatter_args
    from gds_zarr.planning.chunks import scatter_plan

    plan = ChainPlan((), ArrayStep(np.dtype(f"{endian}i4"), (2, 3, 4), order, axes))
    shape = chunk_axes_shape(plan)
    rows = np.random.default_rng(0).integers(0, 255, (3, 96), dtype=np.uint8)
    chunk_sel = [(slice(0, 2, 1), slice(0, 2, 1), slice(0, shape[2], 2))] * 3
    out_sel = [(slice(2 * i, 2 * i + 2), slice(0, 2), slice(0, 2)) for i in range(3)]
    out_shape = (6, 2, 2)
    ref = np.zeros(out_shape, "<i4")
    for j in range(3):
        ref[out_sel[j]] = plan.array.to_chunk(rows[j])[chunk_sel[j]]
    sp = scatter_plan(np.arange(3), chunk_sel, out_sel, shape, out_shape)
    assert sp is not None
    got = np.zeros(out_shape, "<i4")
    decoded, strides = scatter_args(plan, rows, got.dtype)
    _scatter_reference(got, decoded, sp, strides)
    np.testing.assert_array_equal(got, ref)
