"""README.md stays true: its settings table, its two opening commands and .ci/run agree."""

from __future__ import annotations

import re
from pathlib import Path

from gds_zarr import settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_settings_table_is_current() -> None:
    assert settings.markdown_table() in README, (
        "README settings table is stale: paste the output of `python -m gds_zarr settings`"
    )


def _first_bash_block() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block is not None
    return [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]


def test_readme_opens_with_demo_and_test_commands() -> None:
    demo, test = _first_bash_block()
    assert "gds_zarr demo" in demo
    assert test == "bash ci/test_cpu.sh"


def test_ci_run_calls_the_readme_test_command() -> None:
    _, test = _first_bash_block()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci


def test_the_benchmark_figure_is_of_the_latest_complete_cpu_run() -> None:
    """Issue 20, item 7: a plot a reader sees without running anything, redrawn (by the
    command the README gives) when a newer complete CPU run is committed."""
    from benchmarks import latest

    run = latest.complete_run(latest.load_runs())
    assert "![" in README and "](docs/benchmarks-cpu.png)" in README
    assert (ROOT / "docs" / "benchmarks-cpu.png").read_bytes().startswith(b"\x89PNG")
    assert f"(benchmarks/results/{run.stem}.md)" in README, (
        f"the README figure is not of {run.stem}: python -m benchmarks.latest --out "
        "docs/benchmarks-cpu.png, and name that run in the README")
    assert "python -m benchmarks.latest --out docs/benchmarks-cpu.png" in README
