"""The host half of a GPU batch read, on the CPU: what placing a shard's inner chunks costs.

In kvikio's compat mode (and for reads below its ``gds_threshold``) the GPU backend reads on
the host and copies once to the device. Before issue 12's layout, a shard's inner chunks were
read packed (one ``preadv`` per coalesced stretch), copied, and re-packed on the device by a
gather kernel so that every nvCOMP input is aligned. Now every chunk is scattered by the same
``preadv`` to a slot where its input is aligned (``planning.staging.layout_reads``,
``io._cpu.read_scattered``), and nothing is gathered. This measures the host side of both, in a
worker thread as zarr's loop would call it, warm page cache::

    python -m benchmarks.host_staged [--repeat 30] [--dir /tmp/gds_zarr_host_staged]

The device side (one host-to-device copy either way; the gather it saves) needs a GPU and is
not measured here.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from gds_zarr.io._cpu import _pread_full, read_scattered
from gds_zarr.planning.ranges import plan_reads
from gds_zarr.planning.staging import PAYLOADS, layout_reads

__all__ = ["CASES", "main", "measure"]

#: (inner chunks, mean encoded bytes): one shard of ~16 MiB, from 16 KiB chunks down to 1 KiB.
CASES = ((64, 16 << 10), (1024, 16 << 10), (4096, 4 << 10), (16384, 1 << 10))


def _shard(path: str, nchunks: int, mean: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    sizes = rng.integers(mean // 2, mean * 3 // 2, nchunks).astype(np.int64)
    total = int(sizes.sum())
    if not os.path.exists(path) or os.path.getsize(path) != total:
        with open(path, "wb") as f:
            f.write(rng.integers(0, 256, total, dtype=np.uint8).tobytes())
    return np.cumsum(sizes) - sizes, sizes


def measure(path: str, nchunks: int, mean: int, repeat: int) -> dict[str, float]:
    """Median milliseconds of the packed and the placed host reads of one shard."""
    starts, sizes = _shard(path, nchunks, mean)
    total = int(sizes.sum())
    fid = np.zeros(nchunks, np.int64)
    stops = starts + sizes
    file_sizes = np.array([total], np.int64)

    def packed() -> None:
        plan = plan_reads(fid, starts, stops)
        buf = np.empty(plan.total_size, np.uint8)
        view = memoryview(buf)
        fd = os.open(path, os.O_RDONLY)
        try:
            for o, s, d in zip(plan.read_offset.tolist(), plan.read_size.tolist(),
                               plan.read_dest.tolist(), strict=True):
                _pread_full(fd, view[d: d + s], o, path)
        finally:
            os.close(fd)

    def placed() -> None:
        lay = layout_reads(plan_reads(fid, starts, stops), sizes, file_sizes,
                           payload=PAYLOADS["zstd"], dma_min=None)
        read_scattered([path], lay.host, np.empty(lay.host_size, np.uint8),
                       file_sizes=[total])

    def layout() -> None:
        layout_reads(plan_reads(fid, starts, stops), sizes, file_sizes,
                     payload=PAYLOADS["zstd"], dma_min=None)

    def median_ms(fn: Callable[[], None]) -> float:
        fn()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1e3)

    result: dict[str, float] = {}

    def run() -> None:
        result.update(packed=median_ms(packed), placed=median_ms(placed),
                      layout=median_ms(layout))

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--dir", default="/tmp/gds_zarr_host_staged")
    args = ap.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    print("| inner chunks | mean size | packed read (ms) | placed read (ms) | of which plan + "
          "layout (ms) |\n|---|---|---|---|---|")
    for n, mean in CASES:
        r = measure(os.path.join(args.dir, f"shard_{n}_{mean}"), n, mean, args.repeat)
        print(f"| {n} | {mean >> 10} KiB | {r['packed']:.2f} | {r['placed']:.2f} | "
              f"{r['layout']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
