"""Results as Markdown, JSON and PNG plots (throughput per case and reader; throughput
against inner-chunk size for the ``chunk-sizes`` family)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.cases import CHUNK_SERIES, chunk_label, gb_per_s

__all__ = ["add_derived", "chunk_size_tables", "loader_table", "markdown", "plot",
           "plot_chunk_sizes", "write_results"]

MEMORY_NOTE = (
    "Memory: *peak RSS* is the reader process's resident-set high-water mark during one extra, "
    "untimed read minus its resident set just before (kernel `VmHWM`, reset through "
    "`/proc/self/clear_refs`; native allocations and the output array included; each reader "
    "runs in its own process). *Peak traced* is tracemalloc's peak of Python-allocated memory "
    "(NumPy included) in that read. *Peak device* is the peak of CuPy's default memory pool "
    "above its use before the read (allocations outside CuPy's pool are not seen)."
)


def add_derived(records: list[dict[str, Any]], cases: dict[str, Any]) -> None:
    """Add GB/s, chunks/s and the time ratio to gds_zarr to every ``ok`` record, in place.

    ``vs_gds_zarr`` is the reader's median time divided by gds_zarr's on the same case: 20.0
    means gds_zarr is 20x faster than that reader, 0.5 that it is twice as slow.
    """
    base = {r["case"]: r["median_s"] for r in records
            if r["reader"] == "gds_zarr" and r.get("median_s")}
    for r in records:
        t = r.get("median_s")
        if not t:
            continue
        case = cases[r["case"]]
        r["nbytes"], r["chunks"] = case.nbytes, case.chunks
        r["gbps"] = gb_per_s(case.nbytes, t)
        r["chunks_per_s"] = case.chunks / t
        if case.chunk_nbytes:
            r["chunk_nbytes"] = case.chunk_nbytes
            r["us_per_chunk"] = t / case.chunks * 1e6
            r["amplification"] = case.amplification
        r["vs_gds_zarr"] = t / base[r["case"]] if r["case"] in base else None


def _mib(n: int | None) -> str:
    return "—" if n is None else f"{n / (1 << 20):,.1f}"


def _num(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def markdown(records: Sequence[dict[str, Any]], meta: dict[str, Any],
             cases: dict[str, Any]) -> str:
    """The results file: what was run where, then one table row per case and reader."""
    lines = [f"# gds_zarr benchmark: {meta['title']}", ""]
    lines += [f"- **{k}**: {v}" for k, v in meta["summary"].items()]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), ""]
    lines += ["## Cases", ""]
    lines += [f"- `{name}`: {cases[name].description}" for name in meta["cases"]]
    if meta.get("skipped"):
        lines += ["", "Skipped: " + meta["skipped"]]
    lines += ["", "## Results", "",
              f"Median of {meta['repeat']} timed repetitions after one warm-up whose values "
              "are checked against the data written. GB/s: decoded bytes returned per second "
              "(1e9 B). chunks/s: chunks decoded per second (inner chunks for sharded arrays, "
              "files for the store case). *vs gds_zarr*: the reader's time over gds_zarr's "
              "(above 1: gds_zarr is faster).", ""]
    head = ("| case | reader | median s | GB/s | chunks/s | vs gds_zarr | peak RSS MiB "
            "| peak traced MiB | peak device MiB | status |")
    lines += [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    # GPU readers on a CPU run: one sentence instead of a row per case.
    gpu_na = list(dict.fromkeys(r["reader"] for r in records
                                if r["status"].startswith("n/a: GPU reader")))
    for r in records:
        if r["reader"] in gpu_na:
            continue
        ratio = r.get("vs_gds_zarr")
        lines.append(
            f"| {r['case']} | {r['reader']} | {_num(r.get('median_s'), '.4f')} "
            f"| {_num(r.get('gbps'), '.3f')} | {_num(r.get('chunks_per_s'), ',.0f')} "
            f"| {'—' if ratio is None else f'{ratio:.2f}x'} | {_mib(r.get('rss_peak'))} "
            f"| {_mib(r.get('traced_peak'))} | {_mib(r.get('device_peak'))} | {r['status']} |")
    if gpu_na:
        lines += ["", f"GPU readers not run (n/a, device is cpu): {', '.join(gpu_na)}."]
    lines += loader_table(records)
    lines += chunk_size_tables(records, cases)
    for note in meta.get("notes", []):
        lines += ["", note]
    lines += ["", MEMORY_NOTE, ""]
    return "\n".join(lines)


def loader_table(records: Sequence[dict[str, Any]]) -> list[str]:
    """The ``loader`` case with its consumer: how much of the reading the consumer hides."""
    rows = [r for r in records if r.get("with_consumer_s") is not None]
    if not rows:
        return []
    lines = ["", "### Loader: an epoch with a consumer", "",
             "The epoch again, with a consumer that sleeps after every batch as long as one "
             "batch took that reader to read (its median epoch over the batches). Reading "
             "hidden behind the consumer: *with consumer / sleep* near 1.0; not at all: 2.0.",
             "", "| reader | epoch, no consumer s | consumer sleep s | epoch with consumer s "
             "| with consumer / sleep |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['reader']} | {r['median_s']:.4f} | {r['consumer_sleep_s']:.4f} "
                     f"| {r['with_consumer_s']:.4f} "
                     f"| {r['with_consumer_s'] / r['consumer_sleep_s']:.2f} |")
    return lines


_SERIES_TITLES = {
    "sharded": "sharded, whole array",
    "unsharded": "unsharded, whole array",
    "sharded-windows": "sharded, random windows",
    "unsharded-windows": "unsharded, random windows",
}


def _family_grid(records: Sequence[dict[str, Any]], cases: dict[str, Any]
                 ) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """``chunk-sizes`` records as series -> reader -> chunk bytes -> record."""
    grid: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for r in records:
        case = cases.get(r["case"])
        if case is None or case.family != "chunk-sizes" \
                or r["status"].startswith("n/a: GPU reader"):  # one sentence says so already
            continue
        grid.setdefault(case.series, {}).setdefault(r["reader"], {})[case.chunk_nbytes] = r
    return grid


def chunk_size_tables(records: Sequence[dict[str, Any]], cases: dict[str, Any]) -> list[str]:
    """Markdown lines: one table per ``chunk-sizes`` series, readers by inner-chunk size.

    Each cell is ``GB/s (µs per chunk)``; the windows tables add the read amplification
    (bytes decoded per byte returned). Empty when the run had no ``chunk-sizes`` case.
    """
    grid = _family_grid(records, cases)
    if not grid:
        return []
    lines = ["", "## Throughput against inner-chunk size (`chunk-sizes`)", "",
             "Each cell: GB/s of decoded data returned (µs per decoded chunk = median time / "
             "chunks decoded). Windows: the same random windows for every size; "
             "*amplification* is bytes decoded per byte returned."]
    for series in (s for s in CHUNK_SERIES if s in grid):
        sizes = sorted({n for by in grid[series].values() for n in by})
        lines += ["", f"### {_SERIES_TITLES[series]}", "",
                  "| reader | " + " | ".join(chunk_label(n) for n in sizes) + " |",
                  "|---|" + "---:|" * len(sizes)]
        for reader, by in grid[series].items():
            cells = []
            for n in sizes:
                r = by.get(n)
                if r is None:
                    cells.append("")
                elif r.get("gbps"):
                    cells.append(f"{r['gbps']:.3f} ({r['us_per_chunk']:,.0f})")
                else:
                    cells.append(r["status"].split(":")[0])
            lines.append(f"| {reader} | " + " | ".join(cells) + " |")
        if series.endswith("windows"):
            amp = {cases[r["case"]].chunk_nbytes: cases[r["case"]].amplification
                   for by in grid[series].values() for r in by.values()}
            lines.append("| *amplification* | "
                         + " | ".join(f"{amp[n]:.1f}x" for n in sizes) + " |")
    return lines


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_chunk_sizes(records: Sequence[dict[str, Any]], cases: dict[str, Any], title: str,
                     path: Path) -> str | None:
    """GB/s against inner-chunk size per reader (whole reads left, windows right).

    Solid lines are sharded arrays, dashed unsharded; both axes are logarithmic. Returns why
    no plot was written, or None.
    """
    grid = _family_grid(records, cases)
    if not grid:
        return "chunk-size plot skipped: no chunk-sizes case ran"
    plt = _pyplot()
    if plt is None:
        return "chunk-size plot skipped: matplotlib is not installed (pip install matplotlib)"
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=False)
    colors: dict[str, Any] = {}
    for ax, windows in zip(axes, (False, True), strict=True):
        for series in CHUNK_SERIES:
            if series.endswith("windows") != windows or series not in grid:
                continue
            for reader, by in grid[series].items():
                pts = sorted((n, r["gbps"]) for n, r in by.items() if r.get("gbps"))
                if not pts:
                    continue
                color = colors.setdefault(reader, f"C{len(colors)}")
                ax.plot([p[0] / 1024 for p in pts], [p[1] for p in pts], marker="o",
                        color=color, linestyle="-" if series.startswith("sharded") else "--",
                        label=f"{reader} ({series.split('-')[0]})")
        ax.set_xscale("log", base=2)
        sizes = sorted({n for s, by in grid.items() if s.endswith("windows") == windows
                        for r in by.values() for n in r})
        ax.set_xticks([n / 1024 for n in sizes], [chunk_label(n) for n in sizes])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set_yscale("log")
        ax.set_xlabel("inner chunk size, decoded (log scale)")
        ax.set_ylabel("GB/s of decoded data returned (log scale)")
        ax.set_title("random windows" if windows else "whole array", fontsize=10)
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title + "\nsolid: sharded, dashed: unsharded", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def plot(records: Sequence[dict[str, Any]], title: str, path: Path,
         cases: dict[str, Any] | None = None) -> str | None:
    """Grouped bars of GB/s per case and reader (log scale); returns why not, or None.

    ``chunk-sizes`` family cases (when ``cases`` says which they are) are left out: they have
    a figure of their own (:func:`plot_chunk_sizes`). The plot is optional: without
    matplotlib the Markdown and JSON results are still written.
    """
    plt = _pyplot()
    if plt is None:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    family = {n for n, c in (cases or {}).items() if c.family}
    ok = [r for r in records if r.get("gbps") and r["case"] not in family]
    if not ok:
        return None if family and any(r["case"] in family for r in records) \
            else "plot skipped: no reader produced a measurement"
    cases = list(dict.fromkeys(r["case"] for r in ok))
    readers = list(dict.fromkeys(r["reader"] for r in ok))
    width = 0.8 / len(readers)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.3 * len(cases) + 3), 5))
    for i, reader in enumerate(readers):
        vals = {r["case"]: r["gbps"] for r in ok if r["reader"] == reader}
        xs = [c + (i - (len(readers) - 1) / 2) * width for c in range(len(cases))]
        ax.bar(xs, [vals.get(c, 0.0) for c in cases], width, label=reader)
    ax.set_xticks(range(len(cases)), cases, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("GB/s of decoded data (log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write_results(records: list[dict[str, Any]], meta: dict[str, Any], cases: dict[str, Any],
                  out_dir: Path, stem: str) -> tuple[list[Path], str | None]:
    """Write ``<stem>.md``, ``<stem>.json``, ``<stem>.png`` and, when ``chunk-sizes`` cases
    ran, ``<stem>_chunk-sizes.png`` under ``out_dir``.

    Returns
    -------
    (paths written, why the plot was skipped or None)
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{stem}.png"
    why = plot(records, meta["title"], png, cases)
    family_png = out_dir / f"{stem}_chunk-sizes.png"
    family_why = None
    if _family_grid(records, cases):
        family_why = plot_chunk_sizes(records, cases, meta["title"], family_png)
    whys = [w for w in (why, family_why) if w is not None]
    if whys:
        meta = {**meta, "notes": [*meta.get("notes", []),
                                  *(w[0].upper() + w[1:] + "." for w in whys)]}
    md = out_dir / f"{stem}.md"
    md.write_text(markdown(records, meta, cases))
    js = out_dir / f"{stem}.json"
    js.write_text(json.dumps({"meta": meta, "results": records}, indent=1, default=str))
    return [p for p in (md, js, png, family_png) if p.exists()], "; ".join(whys) or None
