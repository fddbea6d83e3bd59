"""read_many / aread_many: the values of ``np.stack([z[s] for s in sels])`` (or the list of
``z[s]``), bit for bit, for every layout, codec chain and kind of basic selection; each chunk
read and decoded once; zarr's own errors for bad selections."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.codecs as zc
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pipeline_cases import DEFAULT, make, numcodecs_codec, sample_data, v2_compressor
from zarr.storage import LocalStore, MemoryStore

import gds_zarr
from gds_zarr import settings
from gds_zarr.pipeline import stats
from gds_zarr.planning.index_cache import shard_index_cache
from gds_zarr.store import GDSStore


def _reference(path: str, sels: list[Any]) -> list[Any]:
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        z = zarr.open_array(LocalStore(path, read_only=True), mode="r")
        return [z[s] for s in sels]


def _same(got: Any, ref: Any) -> None:
    got, ref = np.asarray(got), np.asarray(ref)
    if not ref.dtype.isnative:
        ref = ref.astype(ref.dtype.newbyteorder("="))  # read_many answers in native byte order
    assert got.dtype == ref.dtype and got.shape == ref.shape
    if ref.dtype.kind in "biufc":
        assert got.tobytes() == ref.tobytes()  # bit for bit, NaN payloads included
    else:
        assert np.array_equal(got, ref)


def assert_many(path: str, sels: list[Any], *, store: Any = None, fast: bool = True) -> Any:
    """read_many through ``store`` (default: a GDSStore on ``path``) equals zarr's reads."""
    ref = _reference(path, sels)
    z = zarr.open_array(store if store is not None else GDSStore(path, read_only=True),
                        mode="r")
    stats.reset()
    got = gds_zarr.read_many(z, sels, device="cpu")
    shapes = {np.shape(r) for r in ref}
    if len(shapes) == 1:
        assert isinstance(got, np.ndarray)
        _same(got, np.stack([np.asarray(r) for r in ref]))
    else:
        assert isinstance(got, list) and len(got) == len(ref)
        for g, r in zip(got, ref, strict=True):
            assert isinstance(g, np.ndarray)  # 0-d arrays too, as z[s] gives
            _same(g, r)
    if fast:
        assert stats.read_many_via_zarr == 0
    return got


def _windows(shape: tuple[int, int], size: tuple[int, int], n: int, seed: int = 0) -> list[Any]:
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, shape[0] - size[0] + 1, n)
    xs = rng.integers(0, shape[1] - size[1] + 1, n)
    return [(slice(int(y), int(y) + size[0]), slice(int(x), int(x) + size[1]))
            for y, x in zip(ys, xs, strict=True)]


#: Every kind of basic selection of a 2-D array (shape at least (9, 10)), shapes differ.
MIXED: list[Any] = [
    (slice(None), slice(None)),
    (slice(1, None, 2), slice(None, None, 3)),
    (2, 3),
    (-1, slice(2, 7)),
    (Ellipsis, 1),
    (slice(-3, 100), slice(-2, None)),          # clipped at the edge
    (slice(3, 3), slice(None)),                 # empty
    5,
    (slice(0, 9, 4), -2),
    (slice(2, 8, 7), slice(1, 10, 9)),          # steps larger than a chunk
]


CODECS: dict[str, dict[str, Any]] = {
    "raw": {"compressors": None},
    "zstd": {"compressors": zc.ZstdCodec(level=1)},
    "gzip": {"compressors": zc.GzipCodec(level=6)},
    "blosc": {"compressors": zc.BloscCodec(cname="lz4", shuffle="shuffle")},
    "crc32c": {"compressors": (zc.ZstdCodec(), zc.Crc32cCodec())},
    "transpose_big_endian": {"filters": zc.TransposeCodec(order=(1, 0)),
                             "serializer": zc.BytesCodec(endian="big"),
                             "compressors": zc.GzipCodec()},
    "numcodecs_lz4": {"compressors": "LZ4"},
    "numcodecs_zlib": {"compressors": "Zlib"},
}


@pytest.mark.parametrize("name", list(CODECS))
@pytest.mark.parametrize("sharded", [False, True])
def test_codecs_and_layouts(tmp_path: Path, name: str, sharded: bool) -> None:
    kw = dict(CODECS[name])
    if isinstance(kw.get("compressors"), str):
        kw["compressors"] = numcodecs_codec(kw["compressors"])
    data = sample_data((23, 17), "float32")
    path = str(tmp_path / "a.zarr")
    if sharded:
        kw["shards"] = (6, 8)
    # Rows 12+ are never written: missing chunks (and empty inner chunks) read as the fill.
    make(path, data, chunks=(3, 4), write=np.s_[:12], fill_value=np.nan, **kw)
    assert_many(path, MIXED)
    assert_many(path, _windows((23, 17), (5, 6), 40, seed=1))   # overlapping, stacked


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("compressor", ["blosc", "zlib", "zstd", None])
def test_v2(tmp_path: Path, order: str, compressor: str | None) -> None:
    data = sample_data((9, 10), ">i4")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(4, 3), zarr_format=2, order=order,
         compressors=v2_compressor(compressor), fill_value=0, write=np.s_[:6])
    assert_many(path, MIXED)
    assert_many(path, _windows((9, 10), (4, 4), 12))


@pytest.mark.parametrize("shape,chunks,shards", [
    ((10,), (3,), None), ((10,), (2,), (4,)), ((5, 6, 7), (2, 3, 4), None),
    ((5, 6, 7), (1, 3, 2), (2, 6, 4)), ((4, 5), (10, 10), None),
])
def test_dimensions(tmp_path: Path, shape: tuple[int, ...], chunks: tuple[int, ...],
                    shards: tuple[int, ...] | None) -> None:
    data = sample_data(shape, "int16")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=chunks, shards=shards, fill_value=3)
    nd = len(shape)
    assert_many(path, [(0,) * nd, (-1,) * nd, (1,) * nd])           # 0-d results, stacked
    assert_many(path, [(slice(None, None, 2),) * nd, Ellipsis, (slice(1, 3),) * nd])
    assert_many(path, [(slice(1, None, 3),) * nd] * 3)               # the same window thrice


def test_equal_windows_stack_and_decode_each_chunk_once(tmp_path: Path) -> None:
    data = sample_data((64, 64), "float32")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(8, 8), compressors=zc.ZstdCodec())
    # 30 windows of 12x12 over a 16x16 corner: together they touch only chunks (0..1, 0..1).
    sels = _windows((16, 16), (12, 12), 30)
    got = assert_many(path, sels)
    assert got.shape == (30, 12, 12)
    assert stats.chunks_decoded == 4 and stats.store_reads == 1 and stats.batches == 1


def test_sharded_windows_read_each_index_once(tmp_path: Path) -> None:
    data = sample_data((64, 64), "int32")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(8, 8), shards=(32, 32), compressors=zc.ZstdCodec())
    shard_index_cache.clear()
    store = GDSStore(path, read_only=True)
    sels = _windows((64, 64), (10, 10), 50, seed=3)
    assert_many(path, sels, store=store)
    distinct = {(y // 8, x // 8) for ys, xs in sels
                for y in range(ys.start, ys.stop) for x in range(xs.start, xs.stop)}
    # One batched read of the 4 shard indexes, one of every distinct inner chunk, each once.
    assert stats.store_reads == 2 and stats.chunks_decoded == len(distinct) < 50 * 4
    assert len(shard_index_cache) == 4
    # Again: the indexes come from the cache, so the only requests are the chunks.
    z = zarr.open_array(store, mode="r")  # (opening reads metadata through the store too)
    before = store.io_stats().requests
    stats.reset()
    np.testing.assert_array_equal(gds_zarr.read_many(z, sels, device="cpu"),
                                  np.stack([data[s] for s in sels]))
    assert stats.store_reads == 1
    assert store.io_stats().requests - before == len(distinct)


def test_budget_streams_in_batches(tmp_path: Path) -> None:
    data = sample_data((64, 64), "float64")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(8, 8), compressors=zc.ZstdCodec())
    with settings.set(memory_budget=4 * 8 * 8 * 8):  # two chunks per batch
        assert_many(path, _windows((64, 64), (20, 20), 10))
    assert stats.batches > 10
    assert stats.peak_staging_bytes <= 4 * 8 * 8 * 8 + 2 * 8 * 8 * 8


def test_other_stores(tmp_path: Path) -> None:
    data = sample_data((20, 20), "uint8")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(6, 6), shards=(12, 12), write=np.s_[:13])
    assert_many(path, MIXED, store=LocalStore(path, read_only=True))
    mem = MemoryStore()
    with zarr.config.set({"codec_pipeline.path": DEFAULT}):
        z = zarr.create_array(mem, shape=(20, 20), dtype="u1", chunks=(6, 6))
        z[:13] = data[:13]
    ref = [z[s] for s in MIXED]
    for g, r in zip(gds_zarr.read_many(z, MIXED, device="cpu"), ref, strict=True):
        _same(g, r)


def test_unsupported_chain_goes_through_zarr(tmp_path: Path) -> None:
    path = str(tmp_path / "a.zarr")
    with warnings.catch_warnings(), zarr.config.set({"codec_pipeline.path": DEFAULT}):
        warnings.simplefilter("ignore")
        z = zarr.create_array(LocalStore(path), shape=(9, 10), dtype=str, chunks=(4, 3))
        z[...] = np.arange(90).reshape(9, 10).astype(str)
    assert_many(path, MIXED[:6], fast=False)
    assert stats.read_many_via_zarr == 6


@pytest.mark.parametrize("bad", [
    (9, 0), (0, -11), (slice(None), slice(None), 0), (slice(None, None, -1), 0),
    (slice(None, None, 0), 0), ([1, 2], 0), (Ellipsis, Ellipsis), (None, 0), (True, 0),
])
def test_bad_selection_raises_zarrs_error(tmp_path: Path, bad: Any) -> None:
    data = sample_data((9, 10), "int32")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(4, 3))
    z = zarr.open_array(LocalStore(path, read_only=True), mode="r")
    with pytest.raises(Exception) as ref:
        z.get_basic_selection(bad)
    zg = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    with pytest.raises(type(ref.value)) as got:
        gds_zarr.read_many(zg, [(0, 0), bad], device="cpu")
    assert str(got.value) == str(ref.value)


async def test_aread_many(tmp_path: Path) -> None:
    data = sample_data((30, 30), "float32")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(7, 7), shards=(14, 14))
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    sels = _windows((30, 30), (9, 9), 20)
    got = await gds_zarr.aread_many(z, sels, device="cpu")
    np.testing.assert_array_equal(got, np.stack([data[s] for s in sels]))
    got = await gds_zarr.aread_many(z._async_array, sels[:3], device="cpu")
    np.testing.assert_array_equal(got, np.stack([data[s] for s in sels[:3]]))


def test_empty_list(tmp_path: Path) -> None:
    path = str(tmp_path / "a.zarr")
    make(path, sample_data((4, 4), "int8"), chunks=(2, 2))
    got = gds_zarr.read_many(zarr.open_array(GDSStore(path), mode="r"), [], device="cpu")
    assert isinstance(got, np.ndarray) and got.shape == (0,)


def _sel_strategy(shape: tuple[int, ...]) -> st.SearchStrategy[Any]:
    def axis(n: int) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.integers(-n, n - 1),
            st.builds(slice, st.none() | st.integers(-n - 2, n + 2),
                      st.none() | st.integers(-n - 2, n + 2), st.none() | st.integers(1, n + 1)))

    return st.tuples(*(axis(n) for n in shape))


_HYP_SHAPE = (13, 11)


@pytest.fixture(scope="module")
def hyp_arrays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, np.ndarray]]:
    out = {}
    for name, kw in (("flat", {}), ("sharded", {"shards": (6, 8)})):
        data = sample_data(_HYP_SHAPE, "float32", seed=5)
        path = str(tmp_path_factory.mktemp(name) / "a.zarr")
        make(path, data, chunks=(3, 4), write=np.s_[:10], fill_value=np.nan, **kw)
        out[name] = (path, data)
    return out


@hsettings(max_examples=40, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sels=st.lists(_sel_strategy(_HYP_SHAPE), min_size=1, max_size=6),
       name=st.sampled_from(["flat", "sharded"]))
def test_random_selections(hyp_arrays: dict[str, tuple[str, np.ndarray]], sels: list[Any],
                           name: str) -> None:
    assert_many(hyp_arrays[name][0], sels)
