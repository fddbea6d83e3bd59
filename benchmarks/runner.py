"""Run the benchmark: datasets, one worker process per reader, results files.

Each reader runs in a fresh process (``benchmarks._worker``) over all selected cases, one after
the other. A worker that crashes or stays on one case longer than ``case_timeout_s`` is
stopped; that case is reported as failed or timed out, and a new worker goes on with the rest.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import machine
from benchmarks.cases import BenchConfig, Case, build_cases, gb_per_s, select_cases
from benchmarks.datasets import ensure_dataset
from benchmarks.readers import READERS, make_reader
from benchmarks.report import add_derived, markdown, write_results

__all__ = ["RunResult", "resolve_device", "run"]

_REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run produced: one record per (case, reader), the metadata and the files."""

    records: list[dict[str, Any]]
    meta: dict[str, Any]
    files: list[Path]
    table: str


def resolve_device(requested: str) -> str:
    """``auto`` -> ``gpu`` if gds_zarr (or, without it, CuPy) sees a usable GPU, else ``cpu``."""
    if requested in ("cpu", "gpu"):
        return requested
    if requested != "auto":
        raise ValueError(f"device must be auto, cpu or gpu, got {requested!r}")
    try:
        from gds_zarr import resolve_device as gds_resolve

        return str(gds_resolve("auto"))
    except ImportError:
        return "gpu" if machine.gpu_name() else "cpu"


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gds_zarr-bench"


def run(cfg: BenchConfig, *, device: str = "auto", data_dir: Path | None = None,
        out_dir: Path = _REPO / "benchmarks" / "results", case_names: Sequence[str] = (),
        reader_names: Sequence[str] = (), command: str = "",
        log: Callable[[str], None] = print) -> RunResult:
    """Create missing datasets, run every reader on every case, write the results files.

    Parameters
    ----------
    cfg
        What to measure.
    device
        ``auto``, ``cpu`` or ``gpu``.
    data_dir
        Where datasets are cached (default ``~/.cache/gds_zarr-bench``).
    out_dir
        Where the Markdown, JSON and PNG results go.
    case_names, reader_names
        Subsets to run (all when empty).
    command
        The command line, recorded in the results.
    log
        Progress messages.

    Raises
    ------
    ValueError
        For unknown case or reader names, or ``device="gpu"`` without a GPU.
    """
    dev = resolve_device(device)
    gpu = machine.gpu_name() if dev == "gpu" else None
    if dev == "gpu" and gpu is None:
        raise ValueError("--device gpu: no CUDA device is visible to CuPy")
    all_cases = build_cases(cfg)
    cases = select_cases(all_cases, list(case_names))
    readers = list(reader_names) or list(READERS)
    for name in readers:
        make_reader(name, dev)  # unknown names fail before any work
    skipped = [c.name for c in cases if c.gpu_only and dev != "gpu"]
    cases = [c for c in cases if c.name not in skipped]

    load_start = machine.load_average()
    log(f"load average (1 / 5 / 15 min): {load_start}")
    data = Path(data_dir) if data_dir else _default_data_dir()
    data.mkdir(parents=True, exist_ok=True)
    paths = _datasets(cases, data, log)
    notes = _gpu_baselines(cases, paths, log) if dev == "gpu" else []

    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gds_zarr-bench-") as tmp:
        for name in readers:
            log(f"reader {name}")
            records += _run_reader(name, dev, cfg, cases, paths, Path(tmp), log)
    load_end = machine.load_average()
    log(f"load average (1 / 5 / 15 min): {load_end}")
    add_derived(records, all_cases)
    records.sort(key=lambda r: ([c.name for c in cases].index(r["case"]),
                                readers.index(r["reader"])))

    now = dt.datetime.now()
    label = "quick" if cfg.quick else "full"
    cache = "cold page cache (POSIX_FADV_DONTNEED per file before each repetition)" \
        if cfg.cold else "warm page cache"
    title = (f"{now:%Y-%m-%d %H:%M}, {machine.cpu_model()} ({machine.cores()} cores)"
             f"{', ' + gpu if gpu else ''}, device {dev}, {label}, "
             f"{'cold' if cfg.cold else 'warm'} cache")
    meta = {
        "title": title,
        "summary": {"command": f"`{command}`" if command else "(API call)",
                    "machine": f"{machine.cpu_model()}, {machine.cores()} cores"
                               + (f", GPU {gpu}" if gpu else ", no GPU"),
                    "device": dev, "mode": label, "cache": cache,
                    "repetitions": f"1 warm-up + {cfg.repeat} timed",
                    "load average": f"{load_start} at the start, {load_end} at the end "
                                    f"(1 / 5 / 15 min; {machine.cores()} cores)",
                    "data": str(data)},
        "versions": machine.versions(), "cases": [c.name for c in cases], "repeat": cfg.repeat,
        "skipped": (", ".join(skipped) + " (GPU-only cases; device is cpu)") if skipped else "",
        "notes": notes, "config": cfg.to_json(),
    }
    stem = (f"{now:%Y-%m-%d_%H%M%S}_{machine.machine_slug(gpu)}_{dev}_{label}"
            f"{'_cold' if cfg.cold else ''}")
    files, why = write_results(records, meta, all_cases, Path(out_dir), stem)
    if why:
        log(why)
    return RunResult(records, meta, files, markdown(records, meta, all_cases))


def _datasets(cases: list[Case], data: Path, log: Callable[[str], None]) -> dict[str, str]:
    paths: dict[str, str] = {}
    done: dict[str, Path] = {}
    for case in cases:
        spec = case.dataset
        if spec.name not in done:
            t0 = time.perf_counter()
            done[spec.name] = ensure_dataset(spec, data)
            dt_s = time.perf_counter() - t0
            if dt_s > 0.5:
                log(f"dataset {spec.name}: written in {dt_s:.1f} s")
        paths[case.name] = str(done[spec.name])
    return paths


def _gpu_baselines(cases: list[Case], paths: dict[str, str],
                   log: Callable[[str], None]) -> list[str]:
    """Measure and print the transfer ceilings the large-chunk GPU cases compare against."""
    notes = []
    h2d = machine.measure_h2d()
    notes.append(f"Pinned host-to-device copy bandwidth (256 MiB, cupy): {h2d:.2f} GB/s.")
    large = [c for c in cases if c.name.startswith("gpu-large-")]
    if large:
        biggest = max(large, key=lambda c: c.dataset.chunks[0])
        chunk_file = max(Path(paths[biggest.name]).rglob("c/*"), key=lambda p: p.stat().st_size)
        raw = machine.measure_kvikio_read(chunk_file)
        if raw:
            notes.append(f"Raw kvikio read of one {raw['bytes'] >> 20} MiB chunk file into "
                         f"device memory ({raw['mode']}, warm cache): {raw['gbps']:.2f} GB/s.")
    for n in notes:
        log(n)
    return notes


def _run_reader(name: str, dev: str, cfg: BenchConfig, cases: list[Case],
                paths: dict[str, str], tmp: Path,
                log: Callable[[str], None]) -> list[dict[str, Any]]:
    reader = make_reader(name, dev)
    if reader.gpu_only and dev != "gpu":  # no process needed to say so
        return [{"case": c.name, "reader": name, "status": "n/a: GPU reader (device is cpu)"}
                for c in cases]
    todo = [c.name for c in cases]
    records: list[dict[str, Any]] = []
    attempt = 0
    while todo:
        attempt += 1
        results = tmp / f"{name}-{attempt}.jsonl"
        request = tmp / f"{name}-{attempt}.json"
        request.write_text(json.dumps({"config": cfg.to_json(), "reader": name, "device": dev,
                                       "cases": todo, "paths": paths,
                                       "results": str(results)}))
        got, stderr = _supervise(request, results, cfg.case_timeout_s)
        for rec in got:
            records.append(rec)
            todo.remove(rec["case"])
            _log_record(rec, cases, log)
        if todo:  # the worker died or was stopped on todo[0]
            rec = {"case": todo[0], "reader": name, "status": f"failed: {stderr}"}
            records.append(rec)
            _log_record(rec, cases, log)
            todo.pop(0)
    return records


def _supervise(request: Path, results: Path, timeout_s: float) -> tuple[list[dict[str, Any]], str]:
    """Run one worker; stop it when a case exceeds ``timeout_s``. Returns (results, why)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
    errlog = request.with_suffix(".stderr")
    with open(errlog, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks._worker", str(request)],
                                cwd=_REPO, env=env, stdout=err, stderr=subprocess.STDOUT)
        why = ""
        case_started = time.monotonic()
        seen = 0
        while proc.poll() is None:
            time.sleep(0.05)
            events = _read_events(results)
            if len(events) != seen:
                seen, case_started = len(events), time.monotonic()
            if time.monotonic() - case_started > timeout_s:
                proc.kill()
                proc.wait()
                why = f"timed out after {timeout_s:.0f} s (stopped)"
    done = [e for e in _read_events(results) if e.pop("event") == "result"]
    for e in done:
        e.pop("time", None)
    if not why and proc.returncode != 0:
        tail = errlog.read_text().strip().splitlines()[-1:] or ["(no output)"]
        why = f"worker exited with code {proc.returncode}: {tail[0][:200]}"
    return done, why or "worker ended early"


def _read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    # The last line may be half-written while the worker runs.
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def _log_record(rec: dict[str, Any], cases: list[Case], log: Callable[[str], None]) -> None:
    t = rec.get("median_s")
    if t:
        case = next(c for c in cases if c.name == rec["case"])
        log(f"  {rec['case']:<30} {t:9.4f} s  {gb_per_s(case.nbytes, t):8.3f} GB/s  "
            f"{case.chunks / t:12,.0f} chunks/s")
    else:
        log(f"  {rec['case']:<30} {rec['status']}")
