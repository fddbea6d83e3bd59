"""xarray over GDSStore: a real dataset written by xarray reads back identical through gds_zarr."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

xr = pytest.importorskip("xarray")
pd = pytest.importorskip("pandas")

from gds_zarr.pipeline import enable, stats
from gds_zarr.store import GDSStore


def _dataset() -> xr.Dataset:
    rng = np.random.default_rng(42)
    time = pd.date_range("2024-01-01", periods=8, freq="6h")
    lat, lon = np.linspace(-60, 60, 24), np.arange(0, 360, 10, dtype="f4")
    temperature = rng.normal(285, 8, (8, 24, 36)).astype("f4")
    temperature[2, 3:6, 4] = np.nan
    ds = xr.Dataset(
        {
            "temperature": (("time", "lat", "lon"), temperature,
                            {"units": "K", "standard_name": "air_temperature"}),
            "precip": (("time", "lat", "lon"), rng.gamma(1, 2, (8, 24, 36)),
                       {"units": "mm", "cell_methods": "time: sum"}),
            "land": (("lat", "lon"), rng.integers(0, 2, (24, 36)).astype("u1")),
            "quality": (("time",), np.array([1, 2, -9, 3, 4, -9, 5, 6], dtype="i2")),
        },
        coords={"time": time, "lat": ("lat", lat, {"units": "degrees_north"}),
                "lon": ("lon", lon, {"units": "degrees_east"}),
                "station": ("lat", np.array([f"S{i:03d}" for i in range(24)]))},
        attrs={"title": "gds_zarr xarray test", "Conventions": "CF-1.8", "version": 3},
    )
    ds["quality"].encoding["_FillValue"] = -9  # masked on read
    ds["precip"].encoding["scale_factor"] = 0.01  # CF-encoded: stored as ints
    ds["precip"].encoding["dtype"] = "i4"
    return ds


@pytest.fixture(params=[3, 2], ids=["v3", "v2"])
def path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    out = tmp_path / "ds.zarr"
    _dataset().chunk({"time": 2, "lat": 12}).to_zarr(out, zarr_format=request.param,
                                                     consolidated=True)
    return out


@pytest.fixture
def cpu_enabled() -> Iterator[None]:
    with enable(device="cpu"):
        yield


def _reference(path: Path) -> xr.Dataset:
    # xarray reading the same path with zarr's own store and pipeline: the ground truth.
    with zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
        return xr.open_zarr(path).load()


def _check(got: xr.Dataset, expected: xr.Dataset) -> None:
    xr.testing.assert_identical(got, expected)  # values (NaN-aware), coords, attrs, names
    for name in expected.variables:
        assert got[name].dtype == expected[name].dtype, name
    assert got.attrs == expected.attrs


def test_open_zarr_over_gdsstore(path: Path, cpu_enabled: None) -> None:
    expected = _reference(path)
    before = stats.fast_reads
    ds = xr.open_zarr(GDSStore(path, read_only=True))
    assert ds["temperature"].chunks == ((2,) * 4, (12, 12), (36,))  # lazy, dask-backed
    got = ds.load()
    _check(got, expected)
    assert stats.fast_reads > before  # read by gds_zarr's pipeline, not delegated wholesale
    assert np.isnan(got["quality"].values[2])  # _FillValue still masks
    assert got["precip"].encoding["scale_factor"] == 0.01


def test_open_dataset_engine_zarr_over_gdsstore(path: Path, cpu_enabled: None) -> None:
    expected = _reference(path)
    got = xr.open_dataset(GDSStore(path, read_only=True), engine="zarr", chunks=None)
    _check(got.load(), expected)
    sub = xr.open_dataset(GDSStore(path, read_only=True), engine="zarr").isel(
        time=slice(1, 5), lat=slice(3, 20, 2))
    _check(sub.load(), expected.isel(time=slice(1, 5), lat=slice(3, 20, 2)))


def test_writing_through_gdsstore_round_trips(tmp_path: Path, cpu_enabled: None) -> None:
    ds = _dataset()
    ds.to_zarr(GDSStore(tmp_path / "w.zarr"), consolidated=True)
    _check(xr.open_zarr(GDSStore(tmp_path / "w.zarr", read_only=True)).load(),
           _reference(tmp_path / "w.zarr"))
