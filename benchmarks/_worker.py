"""One reader, many cases, in a process of its own: ``python -m benchmarks._worker REQUEST``.

The runner starts one worker per reader so that readers never share memory peaks, thread
pools, caches or global configuration. The request (JSON) names the reader, the device, the
config and the cases; the worker appends one JSON line per event to the results file the
request names (``start`` before a case, ``result`` after it), flushing each, so the runner
knows how far a worker that crashed or timed out got.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from benchmarks.cases import BenchConfig, Case, build_cases
from benchmarks.datasets import check_values, drop_page_cache, files_of, store_keys
from benchmarks.memory import DeviceMemoryTracker, MemoryProbe
from benchmarks.readers import NotApplicable, Reader, make_reader
from benchmarks.store_batched import check_store_values, read_all

__all__ = ["main", "run_case"]

_CONFIG_KEYS = ("codec_pipeline.path", "buffer", "ndbuffer", "codec_pipeline.strict")


def _zarr_config() -> dict[str, Any]:
    import zarr

    return {k: zarr.config.get(k, None) for k in _CONFIG_KEYS}


def _device_sync(device: str) -> Callable[[], None]:
    if device != "gpu":
        return lambda: None
    import cupy

    return cupy.cuda.runtime.deviceSynchronize


def _short(e: BaseException) -> str:
    """One line for the table: the exception, or its cause when it has no message."""
    text = str(e).strip().splitlines()
    if not text and e.__cause__ is not None:
        return f"{type(e).__name__} ({_short(e.__cause__)})"
    return f"{type(e).__name__}: {text[0][:160] if text else ''}".rstrip(": ").replace("|", "/")


def run_case(reader: Reader, case: Case, cfg: BenchConfig, path: Path,
             tracker: DeviceMemoryTracker | None = None) -> dict[str, Any]:
    """Warm up (checking values), time ``cfg.repeat`` repetitions, then measure memory once.

    Returns
    -------
    dict
        ``status`` ("ok", "wrong values: ...", "n/a: ...", "unsupported: ..." when the reader
        cannot open the array, "failed: ..." when a read raises) and, when ok,
        ``times`` (seconds), ``median_s`` and the peaks of :class:`benchmarks.memory.MemoryUse`.
    """
    rec: dict[str, Any] = {"case": case.name, "reader": reader.name, "status": "ok"}
    if case.gpu_only and reader.device != "gpu":
        return {**rec, "status": "n/a: GPU-only case"}
    files = files_of(path) if cfg.cold else []
    sync = _device_sync(reader.device)
    before = _zarr_config()
    try:
        with reader.session():
            try:
                if case.store:
                    once = _store_reader(reader, case, path)
                elif case.mode == "loader":
                    once = _loader(reader, case, path, sync)
                else:
                    once = _array_reader(reader, case, path, sync)
            except NotApplicable:
                raise
            except Exception as e:  # noqa: BLE001 - the peer cannot open this array: a codec it lacks
                return {**rec, "status": f"unsupported: {_short(e)}"}
            _maybe_drop(files)
            err = once(True)
            if err is not None:
                return {**rec, "status": f"wrong values: {err}"}
            times = []
            for _ in range(cfg.repeat):
                _maybe_drop(files)
                t0 = time.perf_counter()
                once(False)
                times.append(time.perf_counter() - t0)
            _maybe_drop(files)
            with MemoryProbe(tracker) as probe:
                once(False)
            if case.mode == "loader":
                rec.update(_with_consumer(once, times, case))
    except NotApplicable as e:
        return {**rec, "status": f"n/a: {e}"}
    except Exception as e:  # noqa: BLE001 - a peer failing on a case is a result, not a crash of the run
        return {**rec, "status": f"failed: {_short(e)}"}
    after = _zarr_config()
    if after != before:
        rec["status"] = f"ok, but zarr config changed: {before} -> {after}"
    mem = probe.result
    return {**rec, "times": times, "median_s": statistics.median(times),
            "rss_peak": mem.rss_peak, "traced_peak": mem.traced_peak,
            "device_peak": mem.device_peak}


def _maybe_drop(files: list[Path]) -> None:
    if files:
        drop_page_cache(files)


def _array_reader(reader: Reader, case: Case, path: Path,
                  sync: Callable[[], None]) -> Callable[[bool], str | None]:
    handle = reader.open(path)
    if case.mode == "batched":
        def batched(verify: bool) -> str | None:
            outs = reader.read_many(handle, case.selections)
            sync()
            if verify:
                for sel, out in zip(case.selections, outs, strict=True):
                    err = check_values(case.dataset, sel, out)
                    if err is not None:
                        return f"{sel}: {err}"
            return None

        return batched

    def once(verify: bool) -> str | None:
        # Only one output is alive at a time, as in a loop that consumes each window.
        for sel in case.selections:
            out = reader.read(handle, sel)
            sync()
            if verify:
                err = check_values(case.dataset, sel, out)
                if err is not None:
                    return f"{sel}: {err}" if len(case.selections) > 1 else err
            del out
        return None

    return once


def _loader(reader: Reader, case: Case, path: Path,
            sync: Callable[[], None]) -> Callable[..., str | None]:
    """An epoch of the reader's batches; ``consume_s``: seconds a consumer works per batch."""
    handle = reader.open(path)

    def epoch(verify: bool, consume_s: float = 0.0) -> str | None:
        i = 0
        for out in reader.batches(handle, case.selections, case.batch):
            sync()
            if verify:
                for j in range(len(out)):
                    err = check_values(case.dataset, case.selections[i + j], out[j])
                    if err is not None:
                        return f"{case.selections[i + j]}: {err}"
            i += len(out)
            if consume_s:
                time.sleep(consume_s)  # a training step that does not touch the CPU
        return None if i == len(case.selections) else f"{i} windows, not {len(case.selections)}"

    return epoch


def _with_consumer(epoch: Callable[..., str | None], times: list[float],
                   case: Case) -> dict[str, Any]:
    """The epoch again with a consumer that sleeps, per batch, as long as one batch took to
    read: perfect overlap gives the sleep alone, none gives twice it."""
    n = -(-len(case.selections) // case.batch)
    per_batch = statistics.median(times) / n
    t0 = time.perf_counter()
    epoch(False, per_batch)
    return {"consumer_sleep_s": per_batch * n, "with_consumer_s": time.perf_counter() - t0}


def _store_reader(reader: Reader, case: Case, path: Path) -> Callable[[bool], str | None]:
    store = reader.open_store(path)
    keys = store_keys(case.dataset)

    def once(verify: bool) -> str | None:
        buffers = read_all(store, keys)
        return check_store_values(case.dataset, buffers) if verify else None

    return once


def _emit(out: TextIO, event: str, **fields: Any) -> None:
    out.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the request file named by the single argument."""
    args = sys.argv[1:] if argv is None else argv
    request = json.loads(Path(args[0]).read_text())
    cfg = BenchConfig.from_json(request["config"])
    cases = build_cases(cfg)
    reader = make_reader(request["reader"], request["device"])
    warnings.simplefilter("ignore", UserWarning)  # zarr's numcodecs-in-v3 warnings, per read
    with open(request["results"], "a") as out:
        reason = reader.availability()
        tracker = None
        if reason is None and request["device"] == "gpu":
            tracker = DeviceMemoryTracker()
        for name in request["cases"]:
            case = cases[name]
            _emit(out, "start", case=name, reader=reader.name)
            if reason is not None:
                rec: dict[str, Any] = {"case": name, "reader": reader.name, "status": reason}
            else:
                rec = run_case(reader, case, cfg, Path(request["paths"][name]), tracker)
            _emit(out, "result", **rec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
