"""xarray on the GPU: after ``enable(device="gpu")`` the variables read are CuPy-backed and
equal, value for value, to what xarray reads with zarr alone on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

xr = pytest.importorskip("xarray")

from gds_zarr.pipeline import enable
from gds_zarr.store import GDSStore


def _write(path: Path) -> None:
    rng = np.random.default_rng(7)
    t = rng.normal(280, 5, (6, 64, 96)).astype("f4")
    t[0, :3, :3] = np.nan
    ds = xr.Dataset(
        {"t": (("time", "y", "x"), t, {"units": "K"}),
         "mask": (("y", "x"), rng.integers(0, 2, (64, 96)).astype("u1"))},
        coords={"y": np.arange(64.0), "x": np.arange(96.0)},
        attrs={"title": "gpu"},
    )
    ds.chunk({"time": 2, "y": 32, "x": 32}).to_zarr(path, zarr_format=3, consolidated=False)


def test_open_zarr_gives_cupy_backed_variables(tmp_path: Path) -> None:
    import cupy as cp

    path = tmp_path / "ds.zarr"
    _write(path)
    ref = xr.open_zarr(path, consolidated=False).load()
    with enable(device="gpu"):
        ds = xr.open_zarr(GDSStore(path), consolidated=False, chunks=None)
        # .load() keeps the duck array that zarr returned: a CuPy array on the GPU path
        data = ds["t"].load().data
    assert isinstance(data, cp.ndarray), type(data)
    np.testing.assert_array_equal(cp.asnumpy(data), ref["t"].values)
    assert ds.attrs == ref.attrs
