"""Smoke tests of the benchmark harness (``python -m benchmarks``): it runs and reports.

No timing is asserted anywhere: these tests check structure (a table, a row per case and
reader, statuses, files written), the datasets the cases read, and that readers leave zarr's
global configuration as they found it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

REPO = Path(__file__).resolve().parent.parent  # on sys.path (tests/conftest.py)

from benchmarks.cases import (
    ALL_CASES,
    BenchConfig,
    build_cases,
    chunk_shard_shape,
    chunks_touched,
    select_cases,
)
from benchmarks.datasets import (
    DatasetSpec,
    check_values,
    drop_page_cache,
    ensure_dataset,
    files_of,
    make_data,
)
from benchmarks.readers import READERS, make_reader

TINY = ["--quick", "--size", "128", "--windows", "3", "--store-files", "16",
        "--store-file-bytes", "4096", "--repeat", "1", "--device", "cpu",
        "--chunk-edges", "32,64"]
#: The chunk-sizes family members of the TINY run: 4 KiB and 16 KiB inner chunks.
TINY_FAMILY = [f"chunk-{size}-{series}" for size in ("4KiB", "16KiB")
               for series in ("sharded", "sharded-windows", "unsharded", "unsharded-windows")]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str],
                                                                 Path]:
    """One tiny quick-mode run of the real command, shared by the CLI tests."""
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "results"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", *TINY, "--data", str(tmp / "data"), "--out",
         str(out), "--readers", "gds_zarr,zarr,zarr_fused,zarrs,tensorstore,kvikio"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    return proc, out


def test_quick_mode_writes_a_table(tiny_run: tuple[subprocess.CompletedProcess[str],
                                                   Path]) -> None:
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stderr + proc.stdout
    md = list(out.glob("*_cpu_quick.md"))
    assert len(md) == 1, list(out.iterdir())
    text = md[0].read_text()
    assert "| case | reader | median s | GB/s | chunks/s | vs gds_zarr |" in text
    assert "Skipped: gpu-scale" in text  # GPU-only cases are named, not dropped
    assert "GPU readers not run (n/a, device is cpu): kvikio" in text
    assert "peak RSS" in text
    # What matplotlib's presence decides: a PNG, or a sentence saying why not.
    pngs = list(out.glob("*.png"))
    assert pngs or "plot skipped: matplotlib is not installed" in text.lower()


def test_every_case_and_reader_has_a_record(tiny_run: tuple[subprocess.CompletedProcess[str],
                                                            Path]) -> None:
    _proc, out = tiny_run
    data = json.loads(next(out.glob("*.json")).read_text())
    records = data["results"]
    cpu_cases = data["meta"]["cases"]
    assert cpu_cases == ["small-chunks", "large-chunks", "sharded", "partial-reads",
                         "windows-batched", "tiny-reads", "loader", "codec-lz4", "codec-none",
                         "store-get-partial-values", *TINY_FAMILY]
    assert set(cpu_cases) - set(TINY_FAMILY) <= set(ALL_CASES)
    pairs = {(r["case"], r["reader"]) for r in records}
    assert pairs == {(c, r) for c in cpu_cases
                     for r in ("gds_zarr", "zarr", "zarr_fused", "zarrs", "tensorstore",
                               "kvikio")}
    by = {(r["case"], r["reader"]): r for r in records}
    for case in cpu_cases:
        # zarr's own pipeline is the reference peer: it must run and return the right values.
        zr = by[(case, "zarr")]
        assert zr["status"] == "ok", zr
        assert zr["median_s"] > 0 and zr["gbps"] > 0 and zr["chunks_per_s"] > 0
        assert len(zr["times"]) == 1
        assert zr["rss_peak"] is not None and zr["traced_peak"] is not None
        assert by[(case, "kvikio")]["status"].startswith("n/a: GPU reader")
        # A peer is measured, or the table says why not: never silently missing.
        for reader in ("gds_zarr", "zarr_fused", "zarrs", "tensorstore"):
            status = by[(case, reader)]["status"]
            assert status == "ok" or status.startswith(
                ("not installed", "not available", "n/a", "unsupported")), (case, reader, status)
    assert by[("store-get-partial-values", "zarrs")]["status"].startswith(("n/a",
                                                                         "not installed"))
    # gds_zarr reads every training-workload case, values checked; the loader case is also
    # timed with a consumer.
    for case in ("windows-batched", "tiny-reads", "loader"):
        assert by[(case, "gds_zarr")]["status"] == "ok", by[(case, "gds_zarr")]
    loader = by[("loader", "gds_zarr")]
    assert loader["with_consumer_s"] > 0 and loader["consumer_sleep_s"] > 0
    fused = by[("sharded", "zarr_fused")]["status"]
    assert fused == "ok" or fused.startswith("not available")  # zarr >= 3.3 only


def test_ratio_column_is_relative_to_gds_zarr(tiny_run: tuple[subprocess.CompletedProcess[str],
                                                              Path]) -> None:
    _, out = tiny_run
    records = json.loads(next(out.glob("*.json")).read_text())["results"]
    for r in records:
        base = next((b for b in records if b["case"] == r["case"]
                     and b["reader"] == "gds_zarr" and b.get("median_s")), None)
        if r.get("median_s") and base:
            assert r["vs_gds_zarr"] == pytest.approx(r["median_s"] / base["median_s"])
        elif r.get("median_s"):
            assert r["vs_gds_zarr"] is None


def test_loader_table_is_reported(tiny_run: tuple[subprocess.CompletedProcess[str],
                                                  Path]) -> None:
    _, out = tiny_run
    text = next(out.glob("*_cpu_quick.md")).read_text()
    table = text.split("### Loader: an epoch with a consumer")[1]
    assert "| gds_zarr |" in table and "| zarr |" in table


def test_chunk_sizes_family_is_reported(tiny_run: tuple[subprocess.CompletedProcess[str],
                                                         Path]) -> None:
    """The family gets its own tables (readers by inner-chunk size) and its own figure."""
    _, out = tiny_run
    text = next(out.glob("*_cpu_quick.md")).read_text()
    family = text.split("## Throughput against inner-chunk size (`chunk-sizes`)")[1]
    for title in ("sharded, whole array", "unsharded, whole array", "sharded, random windows",
                  "unsharded, random windows"):
        assert f"### {title}" in family
    assert family.count("| reader | 4KiB | 16KiB |") == 4
    assert family.count("| *amplification* |") == 2  # the windows tables only
    assert "| kvikio |" not in family  # GPU readers: one sentence above, not rows
    zarr_rows = [line for line in family.splitlines() if line.startswith("| zarr |")]
    assert len(zarr_rows) == 4 and all(line.count("(") == 2 for line in zarr_rows)
    records = json.loads(next(out.glob("*.json")).read_text())["results"]
    for r in records:
        if r["case"] in TINY_FAMILY and r.get("median_s"):
            assert r["us_per_chunk"] == pytest.approx(r["median_s"] / r["chunks"] * 1e6)
            assert r["amplification"] >= 1.0
            assert r["chunk_nbytes"] == (4096 if "4KiB" in r["case"] else 16384)
    # Bar plot without the family, plus the family's own figure (or why not).
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) in (0, 2), pngs
    assert not pngs or pngs[1].endswith("_quick_chunk-sizes.png")


def test_combine_takes_the_median_of_runs(tiny_run: tuple[subprocess.CompletedProcess[str],
                                                           Path], tmp_path: Path) -> None:
    from benchmarks.combine import combine

    _, out = tiny_run
    run = next(out.glob("*.json"))
    data = json.loads(run.read_text())
    # A second and third "run": every median doubled, then tripled.
    others = []
    for k in (2, 3):
        scaled = {**data, "results": [{**r, "median_s": r["median_s"] * k} if r.get("median_s")
                                      else r for r in data["results"]]}
        others.append(tmp_path / f"run{k}.json")
        others[-1].write_text(json.dumps(scaled))
    text = combine([run, *others])
    assert "# Combined: median of 3 runs' medians" in text
    assert "load average" in text and "at the start" in text
    zr = next(r for r in data["results"] if r["case"] == "sharded" and r["reader"] == "zarr")
    row = next(line for line in text.splitlines() if line.startswith("| sharded | zarr |"))
    assert f"| {2 * zr['median_s']:.4f} |" in row  # the middle of t, 2t, 3t
    assert "| 3.00 |" in row  # max/min
    # Same-run ratios: every reader was scaled alike, so each run's ratio is the first run's.
    first = data["results"]
    gz = next(r for r in first if r["case"] == "sharded" and r["reader"] == "gds_zarr")
    ratio = zr["median_s"] / gz["median_s"]
    assert f"| {ratio:.2f}x ({ratio:.2f}, {ratio:.2f}, {ratio:.2f}) |" in row
    assert "### sharded, random windows" in text
    bad = {**data, "meta": {**data["meta"], "config": {**data["meta"]["config"], "size": 1}}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="different configuration"):
        combine([run, tmp_path / "bad.json"])


def test_chunk_sizes_family_cases() -> None:
    cases = build_cases(BenchConfig())
    family = select_cases(cases, ["chunk-sizes"])
    assert len(family) == 20
    assert [c.name for c in family[:4]] == ["chunk-16KiB-sharded", "chunk-16KiB-sharded-windows",
                                            "chunk-16KiB-unsharded",
                                            "chunk-16KiB-unsharded-windows"]
    assert [c.chunk_nbytes for c in family[::4]] == [16 << 10, 64 << 10, 256 << 10, 1 << 20,
                                                     4 << 20]
    for c in family:
        assert c.dataset.shape == (4096, 4096) and c.dataset.codec == "zstd"
        if "-sharded" in c.name:
            assert c.dataset.shards == (4096, 1024)
        else:
            assert c.dataset.shards is None
        if c.name.endswith("-windows"):
            # The same windows as the partial-read case, whatever the chunk size.
            assert c.selections == cases["partial-reads"].selections
            assert c.amplification == pytest.approx(c.chunks * c.chunk_nbytes / c.nbytes)
        else:
            assert c.amplification == 1.0 and c.nbytes == 4096 * 4096 * 4
    by = {c.name: c for c in family}
    # The 4 MiB windows decode ~24x what they return; 16 KiB ones ~1.6x.
    assert by["chunk-4MiB-sharded-windows"].amplification > 20
    assert by["chunk-16KiB-sharded-windows"].amplification < 2
    # Identical unsharded datasets are shared with the small- and large-chunk cases.
    assert by["chunk-16KiB-unsharded"].dataset == cases["small-chunks"].dataset
    assert by["chunk-4MiB-unsharded"].dataset == cases["large-chunks"].dataset
    # A member is selectable on its own; unknown names still fail.
    assert [c.name for c in select_cases(cases, ["chunk-1MiB-sharded"])] == [
        "chunk-1MiB-sharded"]
    with pytest.raises(ValueError, match="unknown case"):
        select_cases(cases, ["chunk-3KiB-sharded"])
    quick = select_cases(build_cases(BenchConfig.quick_defaults()), ["chunk-sizes"])
    assert {c.chunk_nbytes for c in quick} == {16 << 10, 256 << 10}


def test_chunk_shard_shape() -> None:
    assert chunk_shard_shape(4096, 64) == (4096, 1024)
    assert chunk_shard_shape(4096, 1024) == (4096, 1024)
    assert chunk_shard_shape(1024, 512) == (1024, 512)  # never less than one inner chunk
    assert chunk_shard_shape(1000, 64) == (1000, 192)  # whole inner chunks per shard


def test_chunks_touched() -> None:
    assert chunks_touched((slice(0, 128), slice(0, 128)), (64, 64)) == 4
    assert chunks_touched((slice(1, 65), slice(0, 64)), (64, 64)) == 2
    assert chunks_touched((slice(63, 64),), (64,)) == 1
    cases = build_cases(BenchConfig.quick_defaults(size=256, windows=4))
    assert cases["small-chunks"].chunks == 16
    assert cases["sharded"].chunks == 16  # inner chunks, not shards
    assert cases["partial-reads"].nbytes == 4 * 256 * 256 * 4


def test_dataset_is_written_once(tmp_path: Path) -> None:
    spec = DatasetSpec("small-zstd-64", (64, 64), (16, 16))
    path = ensure_dataset(spec, tmp_path)
    stamp = (path / "zarr.json").stat().st_mtime_ns
    assert ensure_dataset(spec, tmp_path) == path
    assert (path / "zarr.json").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(zarr.open_array(zarr.storage.LocalStore(path), mode="r")[...],
                                  make_data((64, 64), 0))
    drop_page_cache(files_of(path))  # must not raise without root
    changed = DatasetSpec("small-zstd-64", (64, 64), (32, 32))
    ensure_dataset(changed, tmp_path)
    assert zarr.open_array(zarr.storage.LocalStore(path), mode="r").chunks == (32, 32)


def test_hand_assembled_shards_read_back_through_zarr(tmp_path: Path) -> None:
    """The GPU scale dataset's shards are built without zarr; zarr must read them exactly."""
    spec = DatasetSpec("scale", (32 * 20,), (20,), (20 * 8,), "zstd", layout="manual-shards",
                       variants=3, seed=5)
    path = ensure_dataset(spec, tmp_path)
    got = zarr.open_array(zarr.storage.LocalStore(path), mode="r")[...]
    variants = make_data((3, 20), 5)
    np.testing.assert_array_equal(got, variants[np.arange(32) % 3].ravel())
    sel = (slice(0, 640),)
    assert check_values(spec, sel, got) is None
    got[20 * 7] += 1
    assert check_values(spec, sel, got) is not None


def test_check_values_catches_a_wrong_reader(tmp_path: Path) -> None:
    spec = DatasetSpec("x", (32, 32), (16, 16))
    sel = (slice(0, 32), slice(8, 24))
    good = make_data((32, 32), 0)[sel]
    assert check_values(spec, sel, good) is None
    assert "values differ" in str(check_values(spec, sel, good + 1))
    assert "dtype" in str(check_values(spec, sel, good.astype(np.float64)))


@pytest.mark.parametrize("name", [n for n, r in READERS.items() if not r.gpu_only])
def test_reader_sessions_restore_zarr_config(name: str) -> None:
    reader = make_reader(name, "cpu")
    if reader.availability() is not None:
        pytest.skip(f"{name}: {reader.availability()}")
    keys = ("codec_pipeline.path", "buffer", "ndbuffer", "codec_pipeline.strict")
    before = {k: zarr.config.get(k, None) for k in keys}
    with reader.session():
        pass
    assert {k: zarr.config.get(k, None) for k in keys} == before


def test_profile_splits_the_read_time(tiny_run: tuple[subprocess.CompletedProcess[str], Path],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmarks.profile``: one row per case, every part a number, written."""
    import gds_zarr
    from benchmarks.profile import main

    _, out = tiny_run
    data = out.parent / "data"  # the tiny run's datasets: nothing new to write
    before = (zarr.config.get("codec_pipeline.path"), gds_zarr.settings.as_dict())
    assert main(["--quick", "--size", "128", "--data", str(data), "--out", str(out),
                 "--repeat", "1", "--cases", "small-chunks,sharded"]) == 0
    # It ran in this process: zarr's config and gds_zarr's settings are as they were.
    assert (zarr.config.get("codec_pipeline.path"), gds_zarr.settings.as_dict()) == before
    written = sorted(out.glob("*_cpu_profile.md"))
    assert len(written) == 1
    rows = [line for line in written[0].read_text().splitlines()
            if line.startswith("| small-chunks ") or line.startswith("| sharded ")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 8 and all(float(c) == float(c) for c in cells[1:])
        wall, zarr_part, reads, decode = map(float, cells[1:5])
        # The pipeline's counters ran: reads and decodes were timed, inside the wall time.
        assert reads > 0 and decode > 0 and zarr_part >= 0 and reads + decode <= wall
    assert "small-chunks" in capsys.readouterr().out


def test_host_staged_benchmark_measures_both_reads(tmp_path: Path) -> None:
    """``python -m benchmarks.host_staged`` on one small shard: both reads and the layout."""
    from benchmarks.host_staged import measure

    r = measure(str(tmp_path / "shard"), 64, 1024, 1)
    assert set(r) == {"packed", "placed", "layout"} and all(v > 0 for v in r.values())


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux only")
def test_rss_benchmark_reports_each_budget(tmp_path: Path) -> None:
    """``python -m benchmarks.rss`` on a small array: a row per budget, values checked, the
    results files written."""
    from benchmarks.rss import main

    assert main(["--shape", "2048x4096", "--budgets", "4MiB,1GiB", "--repeat", "1",
                 "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]) == 0
    md = next((tmp_path / "out").glob("*_cpu_rss.md")).read_text()
    assert "| 4MiB | this checkout | 69 MiB |" in md and "| 1GiB |" in md
    assert "sampled values checked" in md
    runs = json.loads(next((tmp_path / "out").glob("*_cpu_rss.json")).read_text())["results"]
    assert len(runs) == 2 and all(r["values_ok"] and r["output"] == 2048 * 4096 * 4
                                  and r["peak_above_output"] >= 0 for r in runs)
