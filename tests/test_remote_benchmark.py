"""benchmarks/remote.py runs end to end (tiny arrays, one repetition, 1 ms latency, two
readers), so the remote benchmark cannot rot between the runs that produce its results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("obstore")
pytest.importorskip("moto")


def test_remote_benchmark_runs_and_writes_its_table(tmp_path: Path) -> None:
    import zarr

    import gds_zarr
    from benchmarks import remote

    device, pipeline = gds_zarr.settings.get("device"), zarr.config.get("codec_pipeline.path")
    md = remote.run(quick=True, latency_ms=1.0, repeat=1, readers=["gds_zarr", "zarr_obstore"],
                    out_dir=tmp_path, tiny=True)
    assert md.name.endswith("_remote_quick.md")
    records = json.loads(md.with_suffix(".json").read_text())["records"]
    ok = [r for r in records if "error" not in r]
    assert not [r for r in records if "error" in r], records
    # 2 servers x 2 latencies x 2 readers x 3 cases, every read checked against the data.
    assert len(ok) == 24
    ours = {(r["server"], r["case"], r["latency_ms"]): r["requests"] for r in ok
            if r["reader"] == "gds_zarr"}
    # 4 shards of 16 chunks: one round of index reads whose tails answer the chunk reads.
    assert ours[("http", "sharded", 1.0)] == ours[("s3", "sharded", 1.0)] == 4
    # The run leaves no global state behind (other tests read the settings and zarr's config).
    assert gds_zarr.settings.get("device") == device
    assert zarr.config.get("codec_pipeline.path") == pipeline
    text = md.read_text()
    assert "| http | 1 ms | small | gds_zarr |" in text and "gds_zarr vs best peer" in text
