"""Combine repeated runs: ``python -m benchmarks.combine RUN.json [RUN.json ...] [--out FILE]``.

On a shared machine one run's medians move with whatever else runs; repeating the run and
taking, per case and reader, the median of the runs' medians is steadier. This prints (and
with ``--out`` writes as Markdown) that combined table, each run's median and load average,
and the ``chunk-sizes`` tables computed from the combined medians. The runs must share one
configuration (same cases, sizes and repetitions), which is checked.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.cases import BenchConfig, build_cases
from benchmarks.report import add_derived, chunk_size_tables

__all__ = ["combine", "main"]


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def combine(paths: Sequence[Path]) -> str:
    """The Markdown summary of the runs in ``paths`` (results JSON files of one config).

    Raises
    ------
    ValueError
        If no path is given or the runs' configurations differ.
    """
    if not paths:
        raise ValueError("give at least one results .json file")
    runs = [_load(Path(p)) for p in paths]
    config = runs[0]["meta"]["config"]
    for p, run in zip(paths, runs, strict=True):
        if run["meta"]["config"] != config:
            raise ValueError(f"{p}: a different configuration from {paths[0]}")
    cases = build_cases(BenchConfig.from_json(config))
    order: list[tuple[str, str]] = []
    medians: dict[tuple[str, str], list[float]] = {}
    status: dict[tuple[str, str], str] = {}
    for run in runs:
        for r in run["results"]:
            key = (r["case"], r["reader"])
            if key not in status:
                order.append(key)
                status[key] = r["status"]
            if r.get("median_s"):
                medians.setdefault(key, []).append(r["median_s"])
            elif status[key] == "ok":
                status[key] = r["status"]  # one run failed: say so rather than hide it
    records = []
    for key in order:
        rec: dict[str, Any] = {"case": key[0], "reader": key[1], "status": status[key]}
        if status[key] == "ok" and len(medians.get(key, ())) == len(runs):
            rec["median_s"] = statistics.median(medians[key])
            rec["runs"] = medians[key]
            ours = medians.get((key[0], "gds_zarr"), [])
            if len(ours) == len(runs):
                # Each run's ratio pairs timings taken seconds apart, so it moves less with
                # the machine's load than a ratio of medians taken from different runs.
                rec["ratios"] = [t / g for t, g in zip(medians[key], ours, strict=True)]
        records.append(rec)
    add_derived(records, cases)

    lines = [f"# Combined: median of {len(runs)} runs' medians", "",
             "| run | title | load average (1 / 5 / 15 min) |", "|---|---|---|"]
    lines += [f"| `{Path(p).name}` | {run['meta']['title']} "
              f"| {run['meta']['summary'].get('load average', 'not recorded')} |"
              for p, run in zip(paths, runs, strict=True)]
    lines += ["", "*vs gds_zarr*: the reader's time over gds_zarr's in the same run (above 1: "
              "gds_zarr is faster), the median over the runs, then each run's.", "",
              "| case | reader | median of medians s | GB/s | each run's median s "
              "| max/min | vs gds_zarr | status |", "|---|---|---:|---:|---|---:|---|---|"]
    for r in records:
        if r["status"].startswith("n/a: GPU reader"):
            continue
        runs_s = r.get("runs", [])
        spread = f"{max(runs_s) / min(runs_s):.2f}" if runs_s else "—"
        each = ", ".join(f"{t:.4f}" for t in runs_s) or "—"
        med = f"{r['median_s']:.4f}" if "median_s" in r else "—"
        gbps = f"{r['gbps']:.3f}" if "gbps" in r else "—"
        ratios = r.get("ratios", [])
        vs = (f"{statistics.median(ratios):.2f}x ("
              + ", ".join(f"{x:.2f}" for x in ratios) + ")") if ratios else "—"
        lines.append(f"| {r['case']} | {r['reader']} | {med} | {gbps} | {each} | {spread} "
                     f"| {vs} | {r['status']} |")
    lines += chunk_size_tables(records, cases)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the combined summary; write it too with ``--out``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.combine", description=__doc__)
    p.add_argument("runs", nargs="+", type=Path, help="results .json files of one config")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    a = p.parse_args(argv)
    try:
        text = combine(a.runs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
