"""Where gds_zarr's read time goes: ``python -m benchmarks.profile [--cases ...]``.

For each case it reads the benchmark's selections with gds_zarr (after a warm-up) and splits
every repetition's wall time with the pipeline's own counters (:data:`gds_zarr.pipeline.stats`):

* **zarr, before the pipeline**: wall time minus the time inside the pipeline's ``read``. zarr
  builds one request per chunk (a ``StorePath``, a chunk spec, the selections) before it calls
  any codec pipeline; no pipeline can avoid it.
* **store reads** and **decode + scatter**: the batched store reads and the decoding, as timed
  by the pipeline (reads running ahead of a decoding batch overlap it).
* **rest**: the pipeline's time outside both (planning, fill values, thread hand-offs).

Then it repeats the case with one decode thread and with one I/O thread, which shows how well
each part uses the cores. No timings are asserted anywhere; the table is written as Markdown
under ``benchmarks/results/`` next to the benchmark's own results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import machine
from benchmarks.cases import BenchConfig, Case, build_cases, select_cases
from benchmarks.datasets import ensure_dataset

__all__ = ["main", "profile_case"]

DEFAULT_CASES = ("small-chunks", "sharded", "large-chunks", "partial-reads", "codec-lz4",
                 "codec-gzip", "codec-blosc-lz4-shuffle", "codec-none")
PARTS = ("wall", "zarr", "reads", "decode", "rest")


def _one(array: Any, case: Case) -> dict[str, float]:
    """One repetition: its wall time and the pipeline's split of it (seconds)."""
    from gds_zarr.pipeline import stats

    stats.reset()
    t0 = time.perf_counter()
    for sel in case.selections:
        out = array[sel]
        del out
    wall = time.perf_counter() - t0
    inside = stats.fast_read_seconds
    return {"wall": wall, "zarr": wall - inside, "reads": stats.read_seconds,
            "decode": stats.decode_seconds,
            "rest": inside - stats.read_seconds - stats.decode_seconds}


def profile_case(case: Case, path: Path, repeat: int,
                 **settings: Any) -> dict[str, float]:
    """Medians over ``repeat`` repetitions (after a warm-up) of each part, in seconds."""
    import zarr

    import gds_zarr

    with gds_zarr.settings.set(**settings):
        array = zarr.open_array(gds_zarr.GDSStore(path, read_only=True), mode="r")
        _one(array, case)
        runs = [_one(array, case) for _ in range(repeat)]
    return {part: statistics.median(r[part] for r in runs) for part in PARTS}


def _ms(seconds: float) -> str:
    # Three significant digits: a small case's store reads take tens of microseconds.
    return f"{seconds * 1e3:.3g}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--data", type=Path, default=Path.home() / ".cache" / "gds_zarr-bench",
                   help="dataset directory, shared with python -m benchmarks")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--cases", default=",".join(DEFAULT_CASES),
                   help="comma-separated cases of python -m benchmarks (array cases)")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="the quick mode's small arrays")
    p.add_argument("--size", type=int, default=None, help="edge of the 2-D arrays")
    args = p.parse_args(argv)

    import gds_zarr

    sized = {} if args.size is None else {"size": args.size}
    cfg = BenchConfig.quick_defaults(**sized) if args.quick else BenchConfig(**sized)
    cases = [c for c in select_cases(build_cases(cfg), args.cases.split(",")) if not c.store
             and not c.gpu_only]
    header = ("| case | wall | zarr, before the pipeline | store reads | decode + scatter | rest "
              "| decode + scatter, 1 thread | store reads, 1 thread |")
    rows = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    with gds_zarr.enable(device="cpu"):  # restores zarr's config and the settings
        for case in cases:
            path = ensure_dataset(case.dataset, args.data)
            base = profile_case(case, path, args.repeat)
            one_decoder = profile_case(case, path, args.repeat, decode_threads=1)
            one_reader = profile_case(case, path, args.repeat, io_threads=1)
            rows.append(f"| {case.name} | {_ms(base['wall'])} | {_ms(base['zarr'])} | "
                        f"{_ms(base['reads'])} | {_ms(base['decode'])} | {_ms(base['rest'])} | "
                        f"{_ms(one_decoder['decode'])} | {_ms(one_reader['reads'])} |")
            print(rows[-1], flush=True)
    now = dt.datetime.now()
    settings = gds_zarr.settings.as_dict()
    text = "\n".join([
        f"# Where the read time goes: {now:%Y-%m-%d %H:%M}, {machine.cpu_model()} "
        f"({machine.cores()} cores), device cpu",
        "",
        f"`python -m benchmarks.profile --cases {args.cases} --repeat {args.repeat}"
        f"{' --quick' if args.quick else ''}{f' --size {args.size}' if args.size else ''}`; "
        f"{cfg.size}x{cfg.size} arrays; medians in milliseconds; load average "
        f"{machine.load_average()}; decode_threads={settings['decode_threads']}, "
        f"io_threads={settings['io_threads']}.",
        "",
        *rows,
        "",
        "Columns: see `benchmarks/profile.py`. *zarr, before the pipeline* is zarr-python's "
        "own per-chunk work; *rest* is the pipeline's planning and hand-offs.",
        ""])
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"{now:%Y-%m-%d_%H%M%S}_{machine.machine_slug(None)}_cpu_profile.md"
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
