"""The latest committed result of each kind: ``python -m benchmarks.latest [--out PNG]``.

``benchmarks/results/`` keeps every run (``<date>_<time>_<kind>.json``, where the kind is the
machine, device, mode and cache, e.g. ``amd-epyc-2c_cpu_full``, or ``amd-epyc-2c_remote``).
Many runs measure a few cases only (``--cases``). This module reads them all and keeps, per
kind and case, the newest measurement (:func:`latest`), draws one panel per case
(:func:`figure`) and tabulates each reader's time against gds_zarr's (:func:`ratio_table`).
The notebook ``notebooks/benchmarks.ipynb`` shows them for every kind.

Run as a module, it writes the README's figure: every case of the newest *complete* run of
the CPU kind (the run with the most cases, of one machine under one load; no mixing of runs),
and prints which run that was::

    python -m benchmarks.latest --out docs/benchmarks-cpu.png
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RESULTS", "Run", "chunk_size_figure", "complete_run", "figure", "latest",
           "load_runs", "main", "png_bytes", "ratio_table"]

RESULTS = Path(__file__).resolve().parent / "results"
#: ``2026-12-02_161455_amd-epyc-2c_cpu_full``: the date and time, then the kind.
_STEM = re.compile(r"^(\d{4}-\d{2}-\d{2})_(\d{6})_(.+)$")
#: Cases of the ``chunk-sizes`` family: their own figure (GB/s against chunk size) in each run.
_FAMILY = re.compile(r"^chunk-\d+[KMG]?i?B-")


@dataclass(frozen=True)
class Run:
    """One results file: its stem, kind, date and time, and its records.

    Every record has ``case``, ``reader``, ``median_s`` (None without a measurement) and
    ``status``; a remote run's cases name their server and added latency.
    """

    stem: str
    kind: str
    when: str
    cases: tuple[str, ...]
    records: tuple[dict[str, Any], ...]


def _remote_records(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"case": f"{r['case']} ({r['server']}, {r['latency_ms']:g} ms)",
             "reader": r["reader"], "median_s": r.get("median_s"),
             "status": "ok" if r.get("median_s") else r.get("status", "failed")}
            for r in records]


def load_runs(results: Path = RESULTS) -> list[Run]:
    """Every benchmark run under ``results`` (its ``.json`` files), oldest first."""
    runs = []
    for path in sorted(results.glob("*.json")):
        m = _STEM.match(path.stem)
        if m is None:
            continue
        data = json.loads(path.read_text())
        if "results" in data and all("case" in r and "reader" in r for r in data["results"]):
            records = [{"case": r["case"], "reader": r["reader"],
                        "median_s": r.get("median_s"), "status": r.get("status", "")}
                       for r in data["results"]]
        elif "records" in data:
            records = _remote_records(data["records"])
        else:
            continue  # not a timing of readers per case (e.g. benchmarks.rss: peak memory)
        cases = tuple(dict.fromkeys(r["case"] for r in records))
        runs.append(Run(path.stem, m.group(3), f"{m.group(1)} {m.group(2)[:2]}:"
                        f"{m.group(2)[2:4]}", cases, tuple(records)))
    return runs


def latest(runs: Sequence[Run]) -> dict[str, list[dict[str, Any]]]:
    """Per kind, the records of each case from the newest run that measured it.

    Each record gains ``run``, the stem of its file. Kinds keep the order in which they first
    appeared; cases the order of the kind's most complete run, then any others.
    """
    newest: dict[str, dict[str, Run]] = {}
    for run in runs:  # oldest first: a later run replaces the case
        by_case = newest.setdefault(run.kind, {})
        for case in run.cases:
            by_case[case] = run
    out = {}
    for kind, by_case in newest.items():
        fullest = complete_run([r for r in runs if r.kind == kind], kind)
        order = dict.fromkeys([*fullest.cases, *by_case])
        out[kind] = [{**r, "run": by_case[case].stem} for case in order
                     for r in by_case[case].records if r["case"] == case]
    return out


def complete_run(runs: Sequence[Run], kind_suffix: str = "_cpu_full") -> Run:
    """The newest run with the most cases among the kinds ending in ``kind_suffix``.

    Raises
    ------
    LookupError
        If no run of such a kind exists.
    """
    of_kind = [r for r in runs if r.kind.endswith(kind_suffix)]
    if not of_kind:
        raise LookupError(f"no benchmark run of a kind ending in {kind_suffix!r}")
    most = max(len(r.cases) for r in of_kind)
    return [r for r in of_kind if len(r.cases) == most][-1]


def chunk_size_figure(kind: str, results: Path = RESULTS) -> Path | None:
    """The newest ``<stem>_chunk-sizes.png`` of ``kind`` (GB/s against inner-chunk size, drawn
    by the run that measured the ``chunk-sizes`` family), or None."""
    found = [p for p in sorted(results.glob("*_chunk-sizes.png"))
             if (m := _STEM.match(p.stem.removesuffix("_chunk-sizes"))) and m.group(3) == kind]
    return found[-1] if found else None


def _ratio(records: Sequence[dict[str, Any]], case: str, reader: str) -> float | None:
    by = {r["reader"]: r.get("median_s") for r in records if r["case"] == case}
    mine, base = by.get(reader), by.get("gds_zarr")
    return mine / base if mine and base else None


def ratio_table(records: Sequence[dict[str, Any]]) -> str:
    """A Markdown table, one row per case: gds_zarr's median time, then each other reader's
    time over gds_zarr's (above 1: gds_zarr is faster), and the run it came from."""
    cases = list(dict.fromkeys(r["case"] for r in records))
    measured = {r["reader"] for r in records if r.get("median_s")}  # not GPU peers on a CPU
    readers = [x for x in dict.fromkeys(r["reader"] for r in records)
               if x != "gds_zarr" and x in measured]
    lines = ["| case | gds_zarr s | " + " | ".join(readers) + " | run |",
             "|---|---:|" + "---:|" * len(readers) + "---|"]
    for case in cases:
        rows = [r for r in records if r["case"] == case]
        base = next((r["median_s"] for r in rows if r["reader"] == "gds_zarr"), None)
        cells = []
        for reader in readers:
            ratio = _ratio(rows, case, reader)
            status = next((r["status"] for r in rows if r["reader"] == reader), "")
            cells.append(f"{ratio:.2f}x" if ratio else (status.split(":")[0] or "—"))
        run = rows[0]["run"] if "run" in rows[0] else ""
        lines.append(f"| {case} | {base:.4f} | " if base else f"| {case} | — | ")
        lines[-1] += " | ".join(cells) + f" | {run[:17]} |"
    return "\n".join(lines)


def figure(records: Sequence[dict[str, Any]], title: str, *, columns: int = 6) -> Any:
    """One panel per case (the ``chunk-sizes`` family left out: its runs plot it by chunk
    size): each reader's median time, on the panel's own linear scale; lower is faster.

    Returns
    -------
    matplotlib.figure.Figure, or None when no case has a measurement.
    """
    from matplotlib.figure import Figure  # no pyplot: no backend, no GUI, no global state
    from matplotlib.patches import Patch

    ok = [r for r in records if r.get("median_s") and not _FAMILY.match(r["case"])]
    cases = list(dict.fromkeys(r["case"] for r in ok))
    if not cases:
        return None
    readers = list(dict.fromkeys(r["reader"] for r in ok))
    colors = {reader: f"C{i}" for i, reader in enumerate(readers)}
    columns = min(columns, len(cases))
    rows = -(-len(cases) // columns)
    fig = Figure(figsize=(2.6 * columns, 2.3 * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, case in zip(axes, cases, strict=False):
        got = {r["reader"]: r["median_s"] for r in ok if r["case"] == case}
        slots = [i for i, x in enumerate(readers) if x in got]  # a reader keeps its place
        ax.bar(slots, [got[readers[i]] * 1e3 for i in slots],
               color=[colors[readers[i]] for i in slots])
        ax.set_xticks(range(len(readers)), [""] * len(readers))
        ax.set_title(case, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(cases):]:
        ax.set_visible(False)
    for ax in axes[::columns]:
        ax.set_ylabel("median ms", fontsize=7)
    fig.legend([Patch(color=colors[x]) for x in readers], readers, loc="outside lower center",
               ncols=len(readers), fontsize=8)
    fig.suptitle(f"{title}\nmedian time per read, lower is faster", fontsize=9)
    return fig


def png_bytes(fig: Any, dpi: int = 80) -> bytes:
    """``fig`` as PNG bytes (for ``IPython.display.Image`` or a file)."""
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=dpi)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.latest``: print each kind's newest runs; with ``--out``, write
    the figure of the newest complete CPU run there."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.latest", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--out", type=Path, help="write the figure of the newest complete CPU run")
    args = p.parse_args(argv)
    runs = load_runs(args.results)
    for kind, records in latest(runs).items():
        stems = sorted({r["run"] for r in records})
        print(f"{kind}: {len({r['case'] for r in records})} cases from {len(stems)} run(s), "
              f"newest {stems[-1]}")
    if args.out:
        run = complete_run(runs)
        fig = figure(run.records, f"benchmarks/results/{run.stem}.md")
        args.out.write_bytes(png_bytes(fig))
        print(f"wrote {args.out} from {run.stem} ({len(run.cases)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
