"""Reads while another process replaces shards: how many fail, and does any return wrong values?

A writer process swaps every shard file of a sharded array between two versions (A and B, same
shape, different values and sizes) as fast as it can, each swap atomic (a copy to a temporary
file, then ``os.replace``), as a writer that rewrites shards does. Readers meanwhile read one
whole shard (``z[0:256, 0:256]``), the whole array, or ``read_many`` windows, and every region
read must equal version A or version B of its shard exactly: anything else is wrong data, and
every exception is counted as a failure.

    python -m benchmarks.replacement [--reads 1000] [--out benchmarks/results/NAME.md]

zarr's own pipeline reads a whole shard in one request, so it sees one version by construction;
gds_zarr reads a shard's index first and its chunks in a second pass (see docs/architecture.md,
"One version per shard").
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

SHAPE, CHUNKS, SHARDS = (1024, 1024), (64, 64), (256, 256)


def _make(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Write versions A and B of every shard; A is left in place. Returns the two arrays."""
    a = np.arange(np.prod(SHAPE), dtype="f4").reshape(SHAPE)
    rng = np.random.default_rng(0)
    b = rng.standard_normal(SHAPE).astype("f4")  # less compressible: other chunk sizes
    for name, data in (("B", b), ("A", a)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            z = zarr.create_array(root / "arr", shape=SHAPE, chunks=CHUNKS, shards=SHARDS,
                                  dtype="f4", compressors=zarr.codecs.ZstdCodec(level=1),
                                  overwrite=True)
            z[...] = data
        keep = root / name
        keep.mkdir()
        for f in (root / "arr" / "c").rglob("*"):
            if f.is_file():
                dst = keep / f.relative_to(root / "arr" / "c")
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dst)
    return a, b


def _writer(root: str, stop: Any, count: Any) -> None:
    base = Path(root)
    shards = sorted(p.relative_to(base / "A") for p in (base / "A").rglob("*") if p.is_file())
    n = 0
    while not stop.is_set():  # n: full rounds, alternating versions
        for rel in shards:
            src = base / ("A" if n % 2 else "B") / rel
            dst = base / "arr" / "c" / rel
            tmp = dst.with_name(dst.name + ".swap")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
            count.value += 1
        n += 1


def _host(x: Any) -> np.ndarray:
    return x.get() if hasattr(x, "get") else np.asarray(x)  # CuPy on the GPU


def _check(region: np.ndarray, sel: tuple[slice, ...], a: np.ndarray, b: np.ndarray) -> bool:
    """Every shard of ``region`` (the values at ``sel``) equals version A or B exactly."""
    r0, c0 = sel[0].start or 0, sel[1].start or 0
    for i in range(0, region.shape[0], SHARDS[0]):
        for j in range(0, region.shape[1], SHARDS[1]):
            got = region[i:i + SHARDS[0], j:j + SHARDS[1]]
            idx = (slice(r0 + i, r0 + i + got.shape[0]), slice(c0 + j, c0 + j + got.shape[1]))
            if not (np.array_equal(got, a[idx]) or np.array_equal(got, b[idx])):
                return False
    return True


def run(reads: int, *, engine: str, kind: str, cache: bool = True,
        min_swaps: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Read ``reads`` times (and on until the writer made ``min_swaps`` swaps) while a writer
    swaps shards; count failures and wrong values."""
    import tempfile

    import gds_zarr

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        a, b = _make(root)
        ctx = mp.get_context("spawn")
        stop, count = ctx.Event(), ctx.Value("q", 0)
        w = ctx.Process(target=_writer, args=(str(root), stop, count))
        w.start()
        time.sleep(0.5)  # the writer is swapping before the first read
        failures: dict[str, int] = {}
        wrong = 0
        t0 = time.perf_counter()
        swaps0 = int(count.value)
        try:
            if engine == "zarr":
                z = zarr.open_array(zarr.storage.LocalStore(root / "arr"), mode="r")
                enable: Any = None
            else:
                enable = gds_zarr.enable(device=device, shard_index_cache_size=(
                    64 << 20 if cache else 0))
                enable.__enter__()
                z = zarr.open_array(gds_zarr.GDSStore(root / "arr"), mode="r")
            sel = ((slice(0, 256), slice(0, 256)) if kind == "shard"
                   else (slice(None), slice(None)))
            rng = np.random.default_rng(1)
            read: Callable[[], list[tuple[tuple[slice, ...], np.ndarray]]]
            if kind == "read_many":
                def read() -> list[tuple[tuple[slice, ...], np.ndarray]]:
                    starts = rng.integers(0, 1024 - 256, size=(8, 2)) // 64 * 64
                    sels = [(slice(int(r), int(r) + 256), slice(int(c), int(c) + 256))
                            for r, c in starts]
                    out = gds_zarr.read_many(z, sels, device=device)
                    return [(s, _host(o)) for s, o in zip(sels, out, strict=True)]
            else:
                def read() -> list[tuple[tuple[slice, ...], np.ndarray]]:
                    return [(sel, _host(z[sel]))]
            done = 0
            # At least ``reads`` reads, and on until the writer swapped ``min_swaps`` shards
            # (a loaded machine may starve it), for at most 20 s.
            while done < reads or (int(count.value) - swaps0 < min_swaps
                                   and time.perf_counter() - t0 < 20):
                done += 1
                try:
                    for s, region in read():
                        if not _check_windows(region, s, a, b):
                            wrong += 1
                except Exception as e:  # noqa: BLE001 - every failure is counted by type
                    failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1
            swaps = int(count.value) - swaps0
            if enable is not None:
                enable.__exit__(None, None, None)
        finally:
            stop.set()
            w.join()
        seconds = time.perf_counter() - t0
    return {"engine": engine, "kind": kind, "cache": cache, "reads": done,
            "failed": sum(failures.values()), "errors": failures, "wrong": wrong,
            "swaps": swaps, "seconds": round(seconds, 1)}


def _check_windows(region: np.ndarray, sel: tuple[slice, ...], a: np.ndarray,
                   b: np.ndarray) -> bool:
    # Windows aligned to chunks but not to shards: each chunk must hold A or B (whole shards
    # are one version, so each chunk of one shard must agree with the others: checked below).
    r0, c0 = sel[0].start or 0, sel[1].start or 0
    if r0 % SHARDS[0] == 0 and c0 % SHARDS[1] == 0:
        return _check(region, sel, a, b)
    versions = set()
    for i in range(0, region.shape[0], CHUNKS[0]):
        for j in range(0, region.shape[1], CHUNKS[1]):
            got = region[i:i + CHUNKS[0], j:j + CHUNKS[1]]
            idx = (slice(r0 + i, r0 + i + got.shape[0]), slice(c0 + j, c0 + j + got.shape[1]))
            if np.array_equal(got, a[idx]):
                versions.add(("A", (r0 + i) // SHARDS[0], (c0 + j) // SHARDS[1]))
            elif np.array_equal(got, b[idx]):
                versions.add(("B", (r0 + i) // SHARDS[0], (c0 + j) // SHARDS[1]))
            else:
                return False
    shards = [s[1:] for s in versions]
    return len(shards) == len(set(shards))  # no shard seen in both versions


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reads", type=int, default=1000)
    p.add_argument("--out", type=Path, default=None, help="write a Markdown table here")
    args = p.parse_args(argv)
    rows = []
    for engine, kind, cache in (("zarr", "shard", True), ("gds_zarr", "shard", True),
                                ("gds_zarr", "shard", False), ("zarr", "array", True),
                                ("gds_zarr", "array", True), ("gds_zarr", "read_many", True)):
        n = args.reads if kind == "shard" else max(args.reads // 10, 1)
        r = run(n, engine=engine, kind=kind, cache=cache)
        rows.append(r)
        print(r, flush=True)
    if args.out is not None:
        from benchmarks.machine import cores, cpu_model, load_average, versions

        v = versions()
        lines = [f"# Reads while another process replaces shards ({time.strftime('%Y-%m-%d')})",
                 "", f"Machine: {cpu_model()}, {cores()} cores, CPU path; load average at the "
                 f"end {load_average()}; Python {v['python']}, zarr {v.get('zarr', '?')}. "
                 f"Command: `python -m benchmarks.replacement --reads {args.reads}` (whole-array "
                 "and read_many rows: a tenth as many reads, 8 windows of 256x256 each).", "",
                 "| reader | read | index cache | reads | failed | errors | wrong values | "
                 "shard swaps during the reads | s |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['engine']} | {r['kind']} | {'on' if r['cache'] else 'off'} | "
                         f"{r['reads']} | {r['failed']} | {r['errors'] or '-'} | {r['wrong']} | "
                         f"{r['swaps']} | {r['seconds']} |")
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
