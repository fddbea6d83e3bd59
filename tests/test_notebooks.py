"""The notebooks: committed without outputs, and the quickstart (and benchmarks walk-through) run.

They run in a Jupyter kernel started from this interpreter (a kernelspec written to a temporary
JUPYTER_PATH), on the CPU, so CI notices when an API they use changes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "gds-zarr-tests"


@pytest.mark.parametrize("name", ["quickstart.ipynb", "benchmarks.ipynb"])
def test_committed_without_outputs(name: str) -> None:
    nb = json.loads((NOTEBOOKS / name).read_text())
    assert nb["nbformat"] == 4
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "a notebook without code cells"
    for cell in code:
        assert cell.get("outputs") == [], f"{name}: outputs committed (strip them)"
        assert cell.get("execution_count") is None, f"{name}: execution counts committed"


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pytest.importorskip("nbclient", reason="nbclient is not installed (pip install nbclient)")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install ipykernel)")
    spec = tmp_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "gds_zarr tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setenv("GDS_ZARR_DEVICE", "cpu")  # CPU in CI, whatever this machine has
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return KERNEL


def _execute(name: str, kernel: str) -> list[str]:
    import nbclient
    import nbformat

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=120,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    return ["".join(o.get("text", "")) for c in nb.cells if c.cell_type == "code"
            for o in c.outputs if o.get("output_type") == "stream"]


def test_quickstart_runs_on_cpu(kernel: str) -> None:
    text = "\n".join(_execute("quickstart.ipynb", kernel))
    assert "reading to: cpu" in text
    assert "values equal to what was written" in text
    assert "done" in text


def test_benchmarks_walkthrough_runs(kernel: str) -> None:
    text = "\n".join(_execute("benchmarks.ipynb", kernel))
    results = list((NOTEBOOKS.parent / "benchmarks" / "results").glob("*.md"))
    if results:
        assert f"{len(results)} results file(s)" in text
    else:
        assert "No benchmark results are committed yet" in text
