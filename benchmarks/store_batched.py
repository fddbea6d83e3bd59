"""The store case: every file of a directory in one ``get_partial_values`` call.

Issue 2's benchmark: 4096 files of 16 KiB read by one call through ``gds_zarr.GDSStore`` and
through ``zarr.storage.LocalStore`` (zarr's loop of per-key reads), with the default CPU buffer
prototype, on the same machine in the same run. It is also the case
``store-get-partial-values`` of ``python -m benchmarks``; run alone::

    python -m benchmarks.store_batched [--data DIR] [--files 4096] [--repeat 5] [--cold]

which prints both times and the ratio (and writes the usual results files).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.datasets import DatasetSpec

__all__ = ["check_store_values", "main", "read_all"]


def read_all(store: Any, keys: Sequence[str]) -> list[Any]:
    """Whole-file reads of ``keys`` in ONE ``get_partial_values`` call (default prototype)."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    return list(sync(store.get_partial_values(default_buffer_prototype(),
                                              [(k, None) for k in keys])))


def check_store_values(spec: DatasetSpec, buffers: Sequence[Any]) -> str | None:
    """None if ``buffers`` hold exactly the files of ``spec`` in key order, else what differs."""
    n, size = spec.shape
    if len(buffers) != n:
        return f"{len(buffers)} buffers for {n} keys"
    missing = sum(b is None for b in buffers)
    if missing:
        return f"{missing} of {n} keys came back as None"
    want = np.random.default_rng(spec.seed).integers(0, 256, size=(n, size), dtype=np.uint8)
    got = np.concatenate([np.asarray(b.as_numpy_array()).view(np.uint8).ravel()
                          for b in buffers])
    if got.size != want.size or not np.array_equal(got, want.ravel()):
        return "bytes differ from the files written"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run only the store case (gds_zarr vs zarr) and print the ratio."""
    from benchmarks.__main__ import main as bench_main

    p = argparse.ArgumentParser(prog="python -m benchmarks.store_batched",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--data", default=None, help="dataset directory (default: a cache dir)")
    p.add_argument("--out", default="benchmarks/results", help="results directory")
    p.add_argument("--files", type=int, default=4096, help="number of files (default 4096)")
    p.add_argument("--file-bytes", type=int, default=16 << 10, help="bytes per file (16 KiB)")
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions (default 5)")
    p.add_argument("--cold", action="store_true", help="drop the files' page cache each time")
    a = p.parse_args(argv)
    args = ["--cases", "store-get-partial-values", "--readers", "gds_zarr,zarr",
            "--repeat", str(a.repeat), "--out", a.out, "--store-files", str(a.files),
            "--store-file-bytes", str(a.file_bytes), "--device", "cpu"]
    args += ["--data", a.data] if a.data else []
    args += ["--cold"] if a.cold else []
    return bench_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
