"""Peak host memory of a large read per ``memory_budget``: ``python -m benchmarks.rss``.

Issue 19 (item 4) asks that a read's peak resident set stay within 1.25 x ``memory_budget`` +
64 MiB above its output, with the default allocator settings. This reads a whole 1.5 GiB array
(float32, 16384x24576, zstd level 3, shards of 4096x4096 holding 256x256 chunks) once per budget,
each read in a fresh process (a process's allocator keeps what earlier reads freed, which would
hide the peak) with every ``MALLOC_*`` variable removed from its environment, and reports:

* *peak above output*: the kernel's resident-set high-water mark during the read (``VmHWM``,
  reset by writing 5 to ``/proc/self/clear_refs``) minus the resident set just before it, minus
  the output's size: what the read needed besides its result;
* *held after*: the resident set right after the read, minus the same and the output: memory the
  process keeps (gds_zarr's staging pool keeps free blocks for ``IDLE_SECONDS``);
* the read's wall time and CPU time (user + system, all threads: less sensitive than wall time
  to other work on a shared machine).

Each budget runs ``--repeat`` times, the budgets interleaved; the table gives medians and the
largest peak. ``--src LABEL=DIR`` imports gds_zarr from another checkout; given more than once,
the versions are measured side by side, interleaved (before and after a change, same machine
and data)::

    python -m benchmarks.rss [--budgets 64MiB,256MiB,1GiB] [--repeat 3] [--codec zstd|none]
                             [--shape 16384x24576] [--data DIR] [--out DIR]
                             [--src before=../old-checkout --src after=.]

writes ``<date>_<time>_<machine>_cpu_rss.md`` and ``.json`` under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import machine
from benchmarks.datasets import DatasetSpec, ensure_dataset

__all__ = ["main", "measure_read", "spec_for"]

_REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20


def spec_for(shape: tuple[int, int], codec: str) -> DatasetSpec:
    """The dataset read: float32 ``shape`` in 4096x4096 shards of 256x256 chunks."""
    return DatasetSpec(name=f"rss-{codec}-{shape[0]}x{shape[1]}", shape=shape, chunks=(256, 256),
                       shards=(4096, 4096), codec=codec)


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_read(path: str, budget: str) -> dict[str, Any]:
    """Read the whole array at ``path`` once with ``memory_budget=budget`` (in this process,
    after a small warm-up read); peak and held bytes above the output, wall and CPU seconds."""
    import numpy as np
    import zarr

    import gds_zarr

    with gds_zarr.enable(device="cpu", memory_budget=budget):
        a = zarr.open_array(gds_zarr.GDSStore(path, read_only=True), mode="r")
        a[:256, :256]  # imports, thread pools, the shard index cache: not the read's memory
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        rss0 = _status("VmRSS")
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        out = a[...]
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        hwm, rss1 = _status("VmHWM"), _status("VmRSS")
    # Whole numbers in [0, 1024) (benchmarks.datasets.make_data): a cheap check of the read.
    sample = out[::509, ::509]
    ok = bool((sample >= 0).all() and (sample < 1024).all() and (sample == np.floor(sample)).all()
              and sample.any())
    return {"budget": budget, "peak_above_output": hwm - rss0 - out.nbytes,
            "held_after": rss1 - rss0 - out.nbytes, "output": out.nbytes, "wall_s": wall,
            "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
            "values_ok": ok, "gds_zarr": os.path.dirname(gds_zarr.__file__)}


def _child(path: str, budget: str, src: str | None) -> dict[str, Any]:
    """One read in a fresh process with the default allocator settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    # This module first, then the other checkout's gds_zarr (imported by measure_read).
    code = ("import json, sys; from benchmarks.rss import measure_read; "
            "sys.argv[3] and sys.path.insert(0, sys.argv[3]); "
            "print(json.dumps(measure_read(sys.argv[1], sys.argv[2])))")
    done = subprocess.run([sys.executable, "-c", code, path, budget, src or ""], cwd=_REPO,
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the read at {budget} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _mib(n: float) -> str:
    return f"{n / MIB:.0f}"


def _sources(specs: Sequence[str]) -> list[tuple[str, str | None]]:
    """``--src`` values as ``(label, checkout)``; none: this checkout, unlabelled."""
    if not specs:
        return [("", None)]
    out: list[tuple[str, str | None]] = []
    for spec in specs:
        label, sep, where = spec.partition("=")
        if not sep:
            label, where = Path(spec).name, spec
        out.append((label, str(Path(where).resolve())))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from gds_zarr.settings import parse_bytes

    p = argparse.ArgumentParser(prog="python -m benchmarks.rss",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--budgets", default="64MiB,256MiB,1GiB")
    p.add_argument("--repeat", type=int, default=3, help="fresh processes per budget (3)")
    p.add_argument("--codec", default="zstd", choices=("zstd", "none"))
    p.add_argument("--shape", default="16384x24576", help="ROWSxCOLS, float32 (1.5 GiB)")
    p.add_argument("--data", type=Path, default=Path.home() / ".cache" / "gds_zarr-bench")
    p.add_argument("--out", type=Path, default=_REPO / "benchmarks" / "results")
    p.add_argument("--src", action="append", default=[], metavar="[LABEL=]DIR",
                   help="import gds_zarr from this checkout; repeat to compare versions")
    p.add_argument("--note", default="", help="a sentence for the results (what DIRs hold)")
    a = p.parse_args(argv)
    rows, cols = (int(x) for x in a.shape.lower().split("x"))
    spec = spec_for((rows, cols), a.codec)
    a.data.mkdir(parents=True, exist_ok=True)
    path = str(ensure_dataset(spec, a.data))
    budgets = [b.strip() for b in a.budgets.split(",") if b.strip()]
    sources = _sources(a.src)
    load0 = machine.load_average()
    runs: list[dict[str, Any]] = []
    for rep in range(a.repeat):
        # Interleaved: a slow spell of a shared machine hits every budget and version.
        for budget in budgets:
            for label, src in sources:
                r = _child(path, budget, src)
                r.update(repetition=rep, label=label)
                runs.append(r)
                print(f"{budget} {label}: peak {_mib(r['peak_above_output'])} MiB above the "
                      f"output, held {_mib(r['held_after'])} MiB, {r['wall_s']:.2f} s wall, "
                      f"{r['cpu_s']:.2f} s CPU", flush=True)
    table = ["| memory_budget | gds_zarr | bound (1.25 x budget + 64 MiB) | peak above output, "
             "median (max) | held after the read | wall s, median (min) | CPU s, median | "
             "within |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for budget in budgets:
        bound = int(1.25 * parse_bytes(budget)) + 64 * MIB
        for label, _ in sources:
            rs = [r for r in runs if r["budget"] == budget and r["label"] == label]
            peaks = [r["peak_above_output"] for r in rs]
            table.append(
                f"| {budget} | {label or 'this checkout'} | {_mib(bound)} MiB | "
                f"{_mib(statistics.median(peaks))} ({_mib(max(peaks))}) MiB | "
                f"{_mib(statistics.median(r['held_after'] for r in rs))} MiB | "
                f"{statistics.median(r['wall_s'] for r in rs):.2f} "
                f"({min(r['wall_s'] for r in rs):.2f}) | "
                f"{statistics.median(r['cpu_s'] for r in rs):.2f} | "
                f"{'yes' if max(peaks) <= bound else 'NO'} |")
    now = dt.datetime.now()
    size = rows * cols * 4
    cmd = "python -m benchmarks.rss " + shlex.join(argv if argv is not None else sys.argv[1:])
    where = "; ".join(f"{label or 'this checkout'}: `{src or _REPO}`" for label, src in sources)
    text = "\n".join([
        f"# Peak RSS per memory_budget: {now:%Y-%m-%d %H:%M}, {machine.cpu_model()} "
        f"({machine.cores()} cores), device cpu",
        "",
        f"`{cmd.strip()}`; one whole-array read of {size / 2**30:.2f} GiB (float32 "
        f"{rows}x{cols}, {a.codec}, shards 4096x4096 of 256x256 chunks) per fresh process, "
        f"{a.repeat} per budget and version, interleaved; no `MALLOC_*` variables; warm page "
        f"cache; load average {load0} at the start, {machine.load_average()} at the end; "
        f"gds_zarr from {where}; every read's sampled values "
        f"{'checked' if all(r['values_ok'] for r in runs) else 'WRONG'}.",
        *(["", a.note] if a.note else []),
        "",
        *table,
        "",
        "Columns: see `benchmarks/rss.py`. *Peak above output*: the resident-set high-water "
        "mark during the read minus the resident set before it and the output's size.",
        ""])
    print(text)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = f"{now:%Y-%m-%d_%H%M%S}_{machine.machine_slug(None)}_cpu_rss"
    (a.out / f"{stem}.md").write_text(text)
    (a.out / f"{stem}.json").write_text(json.dumps(
        {"meta": {"command": cmd.strip(), "shape": [rows, cols], "codec": a.codec,
                  "sources": [[label, src or str(_REPO)] for label, src in sources],
                  "note": a.note,
                  "versions": machine.versions()},
         "results": runs}, indent=1))
    print(f"wrote {a.out / stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
