"""Results as Markdown, JSON and a PNG plot (throughput per case and reader)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.cases import gb_per_s

__all__ = ["add_derived", "markdown", "plot", "write_results"]

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
    for note in meta.get("notes", []):
        lines += ["", note]
    lines += ["", MEMORY_NOTE, ""]
    return "\n".join(lines)


def plot(records: Sequence[dict[str, Any]], title: str, path: Path) -> str | None:
    """Grouped bars of GB/s per case and reader (log scale); returns why not, or None.

    The plot is optional: without matplotlib the Markdown and JSON results are still written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    ok = [r for r in records if r.get("gbps")]
    if not ok:
        return "plot skipped: no reader produced a measurement"
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
    """Write ``<stem>.md``, ``<stem>.json`` and ``<stem>.png`` under ``out_dir``.

    Returns
    -------
    (paths written, why the plot was skipped or None)
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{stem}.png"
    why = plot(records, meta["title"], png)
    if why is not None:
        meta = {**meta, "notes": [*meta.get("notes", []), why.capitalize() + "."]}
    md = out_dir / f"{stem}.md"
    md.write_text(markdown(records, meta, cases))
    js = out_dir / f"{stem}.json"
    js.write_text(json.dumps({"meta": meta, "results": records}, indent=1, default=str))
    return [p for p in (md, js, png) if p.exists()], why
