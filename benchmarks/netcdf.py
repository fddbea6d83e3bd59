"""netCDF4/HDF5 through VirtualiZarr: gds_zarr against h5py and zarr's own pipeline (issue 22).

One netCDF4-like HDF5 file written by h5py (a (T, 1024, 1024) float32 variable, 1 MiB chunks
of (1, 512, 512), gzip level 4 + shuffle, as netCDF4 writes ERA5-like fields), read whole and as
random windows, warm page cache, same process, interleaved repeats:

* ``h5py``: ``f["t2m"][...]`` (HDF5's own filter pipeline, one chunk at a time);
* ``zarr``: zarr's default pipeline over VirtualiZarr's ``ManifestStore`` (a ``get`` per chunk);
* ``gds_zarr``: ``gds_zarr.enable(device="cpu")`` over the same ManifestStore (the manifest's
  ranges in one batched read, native inflate + unshuffle in threads); windows with
  ``read_many``.

    python -m benchmarks.netcdf [--steps 64] [--repeats 3] [--out results.md]

Skeleton of the issue's benchmark: the issue asks for ~1 GiB and the xarray/h5netcdf peer too.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(".bench-data")
CHUNKS = (1, 512, 512)


def make(path: Path, steps: int) -> None:
    """The file, unless it exists with this many steps."""
    import h5py

    if path.exists():
        with h5py.File(path, "r") as f:
            if f["t2m"].shape[0] == steps:
                return
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:1024, 0:1024].astype("f4") / 1024
    with h5py.File(path, "w") as f:
        d = f.create_dataset("t2m", shape=(steps, 1024, 1024), dtype="f4", chunks=CHUNKS,
                             compression="gzip", compression_opts=4, shuffle=True)
        for t in range(steps):
            # A smooth field plus noise, kept to 0.01 K as archives quantize: ~2-3x with
            # shuffle + deflate, as ERA5-like fields compress.
            field = 250 + 30 * np.sin(6 * x + t / 7) * np.cos(4 * y) + rng.normal(0, 0.5,
                                                                                 x.shape)
            d[t] = np.round(field, 2).astype("f4")


def _manifest(path: Path) -> Any:
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr.parsers import HDFParser

    return HDFParser()(url=f"file://{path.resolve()}",
                       registry=ObjectStoreRegistry({"file://": LocalStore()}))


def readers(path: Path, windows: list[Any]) -> dict[str, dict[str, Callable[[], Any]]]:
    import h5py
    import zarr

    import gds_zarr

    ms = _manifest(path)
    default = "zarr.core.codec_pipeline.BatchedCodecPipeline"

    def zarr_whole() -> Any:
        with zarr.config.set({"codec_pipeline.path": default}):
            return zarr.open_group(ms, mode="r")["t2m"][...]

    def zarr_windows() -> Any:
        with zarr.config.set({"codec_pipeline.path": default}):
            z = zarr.open_group(ms, mode="r")["t2m"]
            return [z[w] for w in windows]

    def gds_whole() -> Any:
        with gds_zarr.enable(device="cpu"):
            return zarr.open_group(ms, mode="r")["t2m"][...]

    def gds_windows() -> Any:
        z = zarr.open_group(ms, mode="r")["t2m"]
        return gds_zarr.read_many(z, windows, device="cpu")

    def h5_whole() -> Any:
        with h5py.File(path, "r") as f:
            return f["t2m"][...]

    def h5_windows() -> Any:
        with h5py.File(path, "r") as f:
            d = f["t2m"]
            return [d[w] for w in windows]

    return {"whole variable": {"h5py": h5_whole, "zarr": zarr_whole, "gds_zarr": gds_whole},
            "100 windows of 1x256x256": {"h5py": h5_windows, "zarr": zarr_windows,
                                         "gds_zarr": gds_windows}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=64, help="time steps (4 MiB each)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    DATA.mkdir(exist_ok=True)
    path = DATA / f"era-like-{args.steps}.nc"
    make(path, args.steps)
    rng = np.random.default_rng(1)
    corners = rng.integers(0, (args.steps, 1024 - 256, 1024 - 256), size=(100, 3))
    windows = [np.s_[t:t + 1, y:y + 256, x:x + 256] for t, y, x in corners]
    cases = readers(path, windows)
    ref = {case: fns["h5py"]() for case, fns in cases.items()}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for case, fns in cases.items():
            for name, fn in fns.items():  # interleaved: a busy moment hits every reader
                t0 = time.perf_counter()
                got = fn()
                times.setdefault((case, name), []).append(time.perf_counter() - t0)
                np.testing.assert_array_equal(np.asarray(got), np.asarray(ref[case]))
    mib = path.stat().st_size / 2**20
    lines = [f"netCDF4-like file: {mib:.0f} MiB on disk, {args.steps * 4} MiB decoded, "
             f"chunks {CHUNKS} float32, gzip 4 + shuffle; median of {args.repeats}", "",
             "| case | h5py | zarr (ManifestStore) | gds_zarr | best peer / gds_zarr |",
             "|---|---:|---:|---:|---:|"]
    for case in cases:
        med = {n: statistics.median(times[(case, n)]) for n in cases[case]}
        best = min(med["h5py"], med["zarr"])
        lines.append(f"| {case} | {med['h5py']:.3f} s | {med['zarr']:.3f} s | "
                     f"{med['gds_zarr']:.3f} s | {best / med['gds_zarr']:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
