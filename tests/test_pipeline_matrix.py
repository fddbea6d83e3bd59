"""The correctness matrix: gds_zarr's pipeline returns what zarr's default pipeline returns, bit
for bit, for data types, byte orders, shapes, codecs, sharding, v2 arrays and selections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.codecs as zc
from pipeline_cases import (
    DEFAULT,
    SELECTIONS,
    make,
    numcodecs_codec,
    sample_data,
    v2_compressor,
)
from zarr.storage import LocalStore

from gds_zarr.pipeline import PIPELINE_PATH, stats


def read_with(path: str, pipeline: str, select: Callable[[Any], Any]) -> Any:
    with zarr.config.set({"codec_pipeline.path": pipeline}):
        return select(zarr.open_array(LocalStore(path, read_only=True), mode="r"))


def assert_same(path: str, select: Callable[[Any], Any], *, fast: bool = True) -> None:
    """Read ``select`` with zarr's pipeline and ours; compare dtype, shape and bytes."""
    ref = np.asarray(read_with(path, DEFAULT, select))
    stats.reset()
    got = read_with(path, PIPELINE_PATH, select)
    assert isinstance(got, np.ndarray | np.generic)
    got = np.asarray(got)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert got.tobytes() == ref.tobytes()  # bit for bit, NaN payloads included
    if fast:
        assert stats.fast_reads >= 1 and stats.delegated_reads == 0, stats.last_delegation


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int16", "int32", "int64", "float16",
                                   "float32", "float64", "complex64"])
@pytest.mark.parametrize("endian", ["little", "big"])
def test_dtypes_and_byte_order(tmp_path: Any, dtype: str, endian: str) -> None:
    data = sample_data((7, 9), dtype)
    fill = np.nan if np.dtype(dtype).kind in "fc" else 0
    path = str(tmp_path / "a.zarr")
    # Rows 5+ are never written: missing chunks read as the fill value.
    make(path, data, chunks=(3, 4), write=np.s_[:5], fill_value=fill,
         serializer=zc.BytesCodec(endian=endian), compressors=zc.ZstdCodec())
    for select in SELECTIONS.values():
        assert_same(path, select)


@pytest.mark.parametrize("shape,chunks", [
    ((10,), (3,)), ((5, 6, 7), (2, 3, 4)), ((3, 4, 5, 6), (2, 2, 3, 4)),
    ((4, 5), (1, 1)), ((5, 6), (10, 10)), ((1,), (1,)),
])
def test_shapes(tmp_path: Any, shape: tuple[int, ...], chunks: tuple[int, ...]) -> None:
    data = sample_data(shape, "float32")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=chunks, fill_value=np.nan, compressors=zc.ZstdCodec())
    assert_same(path, lambda z: z[...])
    assert_same(path, lambda z: z[(slice(None, None, 2),) * z.ndim])
    assert_same(path, lambda z: z[(0,) * z.ndim])
    assert_same(path, lambda z: z.oindex[(np.array([0, z.shape[0] - 1]),)
                                         + (slice(None),) * (z.ndim - 1)])
    assert_same(path, lambda z: z.vindex[tuple(np.array([0, s - 1, s // 2]) for s in z.shape)])


CODECS: dict[str, dict[str, Any]] = {
    "raw": {"compressors": None},
    "zstd1": {"compressors": zc.ZstdCodec(level=1)},
    "zstd_checksum": {"compressors": zc.ZstdCodec(level=9, checksum=True)},
    "gzip": {"compressors": zc.GzipCodec(level=6)},
    "blosc_lz4_shuffle": {"compressors": zc.BloscCodec(cname="lz4", shuffle="shuffle")},
    "blosc_zstd_bitshuffle": {"compressors": zc.BloscCodec(cname="zstd", shuffle="bitshuffle")},
    "crc32c": {"compressors": (zc.ZstdCodec(), zc.Crc32cCodec())},
    "crc32c_only": {"compressors": zc.Crc32cCodec()},
    "transpose": {"filters": zc.TransposeCodec(order=(1, 0)), "compressors": zc.GzipCodec()},
    "numcodecs_lz4": {"compressors": "LZ4"},
    "numcodecs_zlib": {"compressors": "Zlib"},
    "numcodecs_zstd": {"compressors": "Zstd"},
}


@pytest.mark.parametrize("name", list(CODECS))
def test_codecs(tmp_path: Any, name: str) -> None:
    kw = dict(CODECS[name])
    if isinstance(kw["compressors"], str):
        kw["compressors"] = numcodecs_codec(kw["compressors"])
    data = sample_data((11, 10), "int32")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(4, 3), fill_value=-1, write=np.s_[:8], **kw)
    for select in (SELECTIONS["full"], SELECTIONS["steps"], SELECTIONS["oindex_int"],
                   SELECTIONS["vindex_bool"]):
        assert_same(path, select)


def test_transpose_3d_big_endian(tmp_path: Any) -> None:
    data = sample_data((6, 7, 8), "float64")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(4, 3, 5), fill_value=np.nan,
         filters=(zc.TransposeCodec(order=(2, 0, 1)), zc.TransposeCodec(order=(1, 0, 2))),
         serializer=zc.BytesCodec(endian="big"), compressors=zc.ZstdCodec())
    assert_same(path, lambda z: z[...])
    assert_same(path, lambda z: z[1:5, ::2, 3])


SHARDING: dict[str, dict[str, Any]] = {
    "index_end": {"index_location": "end"},
    "index_start": {"index_location": "start"},
    "index_no_crc": {"index_codecs": (zc.BytesCodec(),)},
    "nested_codecs": {"codecs": (zc.TransposeCodec(order=(1, 0)), zc.BytesCodec(endian="big"),
                                 zc.ZstdCodec(), zc.Crc32cCodec())},
}


@pytest.mark.parametrize("name", list(SHARDING))
def test_sharding(tmp_path: Any, name: str) -> None:
    data = sample_data((23, 17), "float32")
    path = str(tmp_path / "a.zarr")
    cfg = dict(SHARDING[name])
    codec = zc.ShardingCodec(chunk_shape=(3, 4), **{
        "codecs": cfg.pop("codecs", (zc.BytesCodec(), zc.ZstdCodec())), **cfg})
    # Shards (6, 8) do not divide (23, 17): partial shards; rows 12+ missing; the write of
    # columns 0..5 only leaves empty inner chunks in present shards.
    make(path, data, chunks=(6, 8), write=np.s_[:12, :6], fill_value=np.nan,
         serializer=codec, compressors=None)
    for key in ("full", "steps", "int", "ellipsis", "oindex_int", "oindex_bool", "vindex_int",
                "vindex_bool"):
        assert_same(path, SELECTIONS[key])


def test_sharding_with_shards_argument(tmp_path: Any) -> None:
    data = sample_data((40, 30), "int16")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(5, 5), shards=(20, 15), fill_value=7)
    assert_same(path, lambda z: z[...])
    assert_same(path, lambda z: z[3:37:4, 1])


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("compressor", ["blosc", "zlib", "zstd", None])
def test_v2(tmp_path: Any, order: str, compressor: str | None) -> None:
    comp = v2_compressor(compressor)
    for dtype in (">i4", "<f8"):
        data = sample_data((9, 10), dtype)
        path = str(tmp_path / f"a{dtype[1:]}.zarr")
        make(path, data, chunks=(4, 3), zarr_format=2, order=order, compressors=comp,
             fill_value=0, write=np.s_[:6])
        for key in ("full", "steps", "int", "oindex_bool", "vindex_int"):
            assert_same(path, SELECTIONS[key])


def test_v2_filters(tmp_path: Any) -> None:
    import numcodecs

    data = sample_data((9, 10), "<i8")
    path = str(tmp_path / "a.zarr")
    make(path, data, chunks=(4, 3), zarr_format=2, filters=[numcodecs.Delta(dtype="<i8")],
         compressors=numcodecs.Zstd(), fill_value=0)
    assert_same(path, lambda z: z[...])
