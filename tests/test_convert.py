"""gds_zarr.convert: any Zarr in, sharded GPU-decodable Zarr v3 out, equal, resumable, bounded."""

from __future__ import annotations

import argparse
import math
import os
import tracemalloc
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr

from gds_zarr.cli import _convert as cli_convert
from gds_zarr.convert import MARKER_KEY, _bitwise_equal, choose_layout, convert


def _codec_names(arr: Any) -> list[str]:
    """Names of the inner chunk codecs of a sharded v3 array."""
    (sharding,) = [c for c in arr.metadata.codecs if type(c).__name__ == "ShardingCodec"]
    return [type(c).__name__ for c in sharding.codecs]


def _assert_same(a: Any, b: Any) -> None:
    x, y = a[...], b[...]
    assert x.dtype == y.dtype and x.shape == y.shape
    assert _bitwise_equal(np.asarray(x), np.asarray(y))


# --- layout ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,dtype", [((4096, 4096), "f4"), ((365, 721, 1440), "f4"),
                                          ((10_000_000,), "f8"), ((3, 5000, 5000), "u2"),
                                          ((100,), "i8"), ((7, 0), "f4")])
def test_default_layout_follows_the_documented_rule(shape: tuple[int, ...], dtype: str) -> None:
    chunks, shards = choose_layout(shape, dtype)
    item = np.dtype(dtype).itemsize
    nbytes = math.prod(shape) * item
    assert all(s % c == 0 for s, c in zip(shards, chunks, strict=True))
    assert all(1 <= c <= max(1, n) for c, n in zip(chunks, shape, strict=True))
    chunk_bytes, shard_bytes = math.prod(chunks) * item, math.prod(shards) * item
    assert chunk_bytes <= 256 << 10
    assert shard_bytes <= 128 << 20
    if nbytes >= 256 << 10 and 0 not in shape:
        assert chunk_bytes > 64 << 10  # clipping to odd shapes may leave it under 128 KiB
    if nbytes >= 128 << 20:
        assert shard_bytes > 64 << 20
    # A shard never reaches more than one chunk past the end of the array.
    assert all(s < n + c or n == 0 for s, n, c in zip(shards, shape, chunks, strict=True))


def test_requested_shapes_apply_to_arrays_of_that_rank_only() -> None:
    assert choose_layout((1000, 1000), "f4", chunk_shape=(64, 64), shard_shape=(512, 512)) == (
        (64, 64), (512, 512))
    # Clipped to the array; shard trimmed to whole chunks covering it.
    assert choose_layout((100, 50), "f4", chunk_shape=(64, 64), shard_shape=(1024, 1024)) == (
        (64, 50), (128, 50))
    # A 2-d request does not apply to a 1-d coordinate.
    assert choose_layout((100,), "f8", shard_shape=(512, 512)) == ((100,), (100,))
    # Only a shard shape: the default chunk is shrunk to divide it.
    chunks, shards = choose_layout((4096, 4096), "f4", shard_shape=(1000, 1000))
    assert shards == (1000, 1000) and all(1000 % c == 0 for c in chunks)
    with pytest.raises(ValueError, match="not a multiple"):
        choose_layout((1000, 1000), "f4", chunk_shape=(64, 64), shard_shape=(100, 100))
    with pytest.raises(ValueError, match=">= 1"):
        choose_layout((1000,), "f4", chunk_shape=(0,))


def test_bitwise_comparison_sees_nan_payloads_and_signed_zero() -> None:
    a = np.array([np.nan, 1.0, 0.0])
    assert _bitwise_equal(a, a.copy())
    other_nan = a.copy()
    other_nan.view(np.uint64)[0] ^= 1  # still NaN, other payload
    assert np.isnan(other_nan[0]) and not _bitwise_equal(a, other_nan)
    assert not _bitwise_equal(a, np.array([np.nan, 1.0, -0.0]))
    assert not _bitwise_equal(a, a.astype("f4"))
    s = np.array(["a", "bc"], dtype=object)
    assert _bitwise_equal(s, s.copy()) and not _bitwise_equal(s, np.array(["a", "b"], object))


# --- conversions -------------------------------------------------------------------------------


@pytest.mark.parametrize("compressor", [numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE),
                                        numcodecs.Zlib(3)], ids=["blosc", "zlib"])
def test_v2_array_becomes_sharded_v3_with_equal_values(tmp_path: Path, compressor: Any) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    data = np.random.default_rng(0).normal(size=(300, 257)).astype("f4")
    data[5, :] = np.nan
    a = zarr.create_array(src, shape=data.shape, dtype=data.dtype, chunks=(70, 40),
                          compressors=compressor, zarr_format=2, order="F", fill_value=-9.0,
                          attributes={"units": "K", "nested": {"a": [1, 2]}})
    a[...] = data

    summary = convert(src, dst, chunk_shape=(32, 64), shard_shape=(128, 128), progress=False)

    b = zarr.open_array(dst, mode="r")
    assert b.metadata.zarr_format == 3
    assert b.chunks == (32, 64) and b.shards == (128, 128)
    assert _codec_names(b)[-1] == "ZstdCodec"
    assert b.attrs.asdict() == {"units": "K", "nested": {"a": [1, 2]}}
    assert b.fill_value == -9.0
    _assert_same(a, b)
    assert summary.arrays == ("",) and summary.groups == 0
    assert summary.shards_written == 3 * 3 and summary.shards_skipped == 0
    assert summary.nbytes == data.nbytes
    assert summary.bytes_in == a.nbytes_stored() and summary.bytes_out == b.nbytes_stored()
    assert "ratio" in str(summary) and "verified" in str(summary)
    assert not (dst / MARKER_KEY).exists()


@pytest.mark.parametrize("codec,name", [("lz4", "LZ4"), ("gzip", "GzipCodec"),
                                        ("zstd", "ZstdCodec")])
def test_each_codec_round_trips(tmp_path: Path, codec: str, name: str) -> None:
    src = zarr.create_array(tmp_path / "src.zarr", shape=(50, 60), dtype="i2", chunks=(7, 9))
    src[...] = np.arange(3000, dtype="i2").reshape(50, 60)
    convert(tmp_path / "src.zarr", tmp_path / "dst.zarr", codec=codec, level=1, progress=False)
    out = zarr.open_array(tmp_path / "dst.zarr", mode="r")
    assert _codec_names(out)[-1] == name
    _assert_same(src, out)


def test_v3_group_keeps_hierarchy_attributes_and_consolidation(tmp_path: Path) -> None:
    src = tmp_path / "src.zarr"
    root = zarr.open_group(src, mode="w", attributes={"title": "root", "version": 2})
    sub = root.create_group("sub", attributes={"kind": "subgroup"})
    deeper = sub.create_group("deeper", attributes={"depth": 2})
    x = sub.create_array("x", shape=(40, 30), dtype="u1", chunks=(8, 8),
                         dimension_names=("row", "col"), attributes={"a": 1})
    x[...] = np.arange(1200).reshape(40, 30) % 251
    y = deeper.create_array("y", shape=(), dtype="f8", fill_value=1.5)
    y[...] = 2.5
    z = root.create_array("z", shape=(1000,), dtype="<M8[s]", chunks=(64,))
    z[...] = np.arange(1000).astype("M8[s]")
    zarr.consolidate_metadata(src)

    summary = convert(src, tmp_path / "dst.zarr", progress=False)

    out = zarr.open_group(tmp_path / "dst.zarr", mode="r")
    assert out.metadata.consolidated_metadata is not None
    assert sorted(p for p, _ in out.members(max_depth=None)) == [
        "sub", "sub/deeper", "sub/deeper/y", "sub/x", "z"]
    assert out.attrs.asdict() == {"title": "root", "version": 2}
    assert out["sub"].attrs.asdict() == {"kind": "subgroup"}
    assert out["sub/deeper"].attrs.asdict() == {"depth": 2}
    assert out["sub/x"].metadata.dimension_names == ("row", "col")
    assert out["sub/x"].attrs.asdict() == {"a": 1}
    _assert_same(x, out["sub/x"])
    _assert_same(y, out["sub/deeper/y"])
    _assert_same(z, out["z"])
    assert summary.groups == 3 and sorted(summary.arrays) == ["sub/deeper/y", "sub/x", "z"]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_xarray_dataset_survives_conversion(tmp_path: Path, zarr_format: int) -> None:
    xr = pytest.importorskip("xarray")
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(1)
    ds = xr.Dataset(
        {
            "temperature": (("time", "lat", "lon"), rng.normal(280, 5, (6, 20, 30)).astype("f4"),
                            {"units": "K", "long_name": "air temperature"}),
            "count": (("time",), np.array([3, -1, 4, 1, -1, 9], dtype="i4")),
            "station": (("lat",), np.array([f"st{i:02d}" for i in range(20)])),
        },
        coords={"time": pd.date_range("2021-01-01", periods=6, freq="D"),
                "lat": np.linspace(-45, 45, 20), "lon": np.arange(30, dtype="i2")},
        attrs={"title": "test dataset", "history": "written by xarray"},
    )
    ds["count"].encoding["_FillValue"] = -1  # masked on read: int data becomes float with NaN
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    ds.to_zarr(src, zarr_format=zarr_format, mode="w", consolidated=True)

    convert(src, dst, progress=False)

    expected = xr.open_zarr(src).load()
    got = xr.open_zarr(dst).load()
    xr.testing.assert_identical(got, expected)
    assert np.isnan(got["count"].values[1])  # the fill value still masks
    assert zarr.open_group(dst, mode="r")["temperature"].metadata.zarr_format == 3


# --- safe reruns -------------------------------------------------------------------------------


def test_rerun_refuses_finished_output_and_other_parameters(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    zarr.create_array(src, shape=(10,), dtype="f4")[...] = np.arange(10, dtype="f4")
    convert(src, dst, progress=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert(src, dst, progress=False)
    again = convert(src, dst, codec="gzip", progress=False, overwrite=True)
    assert again.shards_written == 1
    assert _codec_names(zarr.open_array(dst, mode="r"))[-1] == "GzipCodec"
    with pytest.raises(ValueError, match="same store"):
        convert(src, src, progress=False)


def test_interrupted_conversion_resumes_and_skips_verified_shards(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    root = zarr.open_group(src, mode="w", zarr_format=2)
    a = root.create_array("a", shape=(64, 64), dtype="i4", chunks=(16, 16),
                          compressors=numcodecs.Zlib(1))
    a[...] = np.arange(64 * 64, dtype="i4").reshape(64, 64)
    b = root.create_array("b", shape=(64, 64), dtype="i4", chunks=(16, 16),
                          compressors=numcodecs.Zlib(1))
    b[...] = -np.arange(64 * 64, dtype="i4").reshape(64, 64)
    # A corrupt chunk in the 3rd shard of "b": the first run fails there, like a crash.
    bad = src / "b" / "1.0"
    good_bytes = bad.read_bytes()
    bad.write_bytes(b"not zlib data")
    with pytest.raises(Exception):  # noqa: B017 - whatever zarr's zlib raises
        convert(src, dst, shard_shape=(16, 64), chunk_shape=(16, 16), progress=False)
    assert (dst / MARKER_KEY).exists()
    # A different parameter set must not resume this DST.
    with pytest.raises(FileExistsError, match="other parameters"):
        convert(src, dst, shard_shape=(32, 64), chunk_shape=(16, 16), progress=False)

    bad.write_bytes(good_bytes)
    summary = convert(src, dst, shard_shape=(16, 64), chunk_shape=(16, 16), progress=False)

    # "a" (4 shards) and the first shard of "b" were verified by the first run.
    assert summary.shards_skipped == 5 and summary.shards_written == 3
    assert not (dst / MARKER_KEY).exists()
    out = zarr.open_group(dst, mode="r")
    _assert_same(a, out["a"])
    _assert_same(b, out["b"])


# --- bounded memory ----------------------------------------------------------------------------


def test_memory_stays_bounded_by_shards_not_the_array(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    shape = (2048, 1024)  # 16 MiB of float64
    a = zarr.create_array(src, shape=shape, dtype="f8", chunks=(256, 256), zarr_format=2,
                          compressors=numcodecs.Zlib(1))
    for i in range(0, shape[0], 256):  # written in strips: the source never sits in memory
        a[i:i + 256] = np.arange(i * shape[1], (i + 256) * shape[1], dtype="f8").reshape(256, -1)
    nbytes = math.prod(shape) * 8

    tracemalloc.start()
    try:
        summary = convert(src, dst, shard_shape=(256, 256), chunk_shape=(64, 64), progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert summary.shards_written == 32
    # One 512 KiB shard in flight, a few times over (source, encoded, read-back): far below 16 MiB.
    assert peak < nbytes / 4, f"peak {peak} bytes for a {nbytes}-byte array"
    out = zarr.open_array(dst, mode="r")
    assert np.array_equal(out[-1], np.arange((shape[0] - 1) * shape[1], shape[0] * shape[1]))


# --- the CLI -----------------------------------------------------------------------------------


def _cli_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gds-zarr")
    cli_convert.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    a = zarr.create_array(src, shape=(100, 100), dtype="u2", chunks=(10, 10), zarr_format=2)
    a[...] = np.arange(10_000, dtype="u2").reshape(100, 100)
    args = _cli_args(["convert", os.fspath(src), os.fspath(dst), "--shard-shape", "64,64",
                      "--chunk-shape", "32x32", "--codec", "lz4", "--no-progress"])
    assert args.shard_shape == (64, 64) and args.chunk_shape == (32, 32)

    assert cli_convert.run(args) == 0
    assert "converted 1 array(s)" in capsys.readouterr().out
    b = zarr.open_array(dst, mode="r")
    assert b.shards == (64, 64) and _codec_names(b)[-1] == "LZ4"
    _assert_same(a, b)

    # A second run on the finished output refuses, with the reason on stderr, naming the
    # command's flag (the Python API names its argument, overwrite=True).
    assert cli_convert.run(args) == 2
    err = capsys.readouterr().err
    assert "--overwrite to replace it" in err and "overwrite=True" not in err
    assert cli_convert.run(_cli_args(["convert", os.fspath(tmp_path / "missing.zarr"),
                                      os.fspath(tmp_path / "x.zarr"), "--no-progress"])) == 2
    with pytest.raises(SystemExit):
        _cli_args(["convert", "a", "b", "--shard-shape", "64,-1"])


def test_cli_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    pytest.importorskip("tqdm")
    src = tmp_path / "src.zarr"
    zarr.create_array(src, shape=(64, 64), dtype="f4", chunks=(8, 8))[...] = 1.0
    assert cli_convert.run(_cli_args(["convert", os.fspath(src),
                                      os.fspath(tmp_path / "dst.zarr")])) == 0
    out, err = capsys.readouterr()
    assert "convert: 100%" in err and "converted 1 array(s)" in out
