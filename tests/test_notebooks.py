"""The notebooks: committed without outputs, and the quickstart (and benchmarks walk-through) run.

They run in a Jupyter kernel started from this interpreter (a kernelspec written to a temporary
JUPYTER_PATH), on the CPU, so CI notices when an API they use changes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

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


def _execute(name: str, kernel: str) -> list[dict[str, Any]]:
    """Run the notebook; its code cells' outputs, in order."""
    import nbclient
    import nbformat

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=120,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _text(outputs: list[dict[str, Any]]) -> str:
    return "\n".join("".join(o.get("text", "")) for o in outputs
                     if o.get("output_type") == "stream" and o.get("name") == "stdout")


def test_quickstart_runs_on_cpu(kernel: str) -> None:
    text = _text(_execute("quickstart.ipynb", kernel))
    assert "reading to: cpu" in text
    assert "values equal to what was written" in text
    assert "done" in text


def test_benchmarks_notebook_shows_the_latest_result_of_each_kind(kernel: str) -> None:
    """Issue 20, item 7: one table and one figure per kind (not one plot per results file), no
    warnings, no line per case and reader."""
    from benchmarks import latest

    outputs = _execute("benchmarks.ipynb", kernel)
    runs = latest.load_runs()
    kinds = latest.latest(runs)
    text = _text(outputs)
    assert f"{len(runs)} results file(s), {len(kinds)} kind(s)" in text
    assert not [o for o in outputs if o.get("name") == "stderr"], "warnings were printed"
    assert not [o for o in outputs if o.get("output_type") == "error"]
    tables = [o["data"]["text/markdown"] for o in outputs
              if "text/markdown" in o.get("data", {})]
    assert [t.splitlines()[0] for t in tables] == [f"### {k}" for k in kinds]
    for table, records in zip(tables, kinds.values(), strict=True):
        assert len(table.splitlines()) == 4 + len({r["case"] for r in records})
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    families = [k for k in kinds if latest.chunk_size_figure(k) is not None]
    assert len(images) == len(kinds) + len(families)
    assert len(text.splitlines()) < 20  # a summary, not a line per case and reader


def test_benchmarks_notebook_without_results(tmp_path: Path) -> None:
    """No results committed: the notebook's helpers say so instead of failing."""
    from benchmarks import latest

    assert latest.load_runs(tmp_path) == [] and latest.latest([]) == {}
    with pytest.raises(LookupError, match="_cpu_full"):
        latest.complete_run([])


def test_the_notebooks_extra_has_what_the_notebooks_import() -> None:
    """``pip install -e ".[notebooks]"`` (the README's Notebooks section says so) brings Jupyter
    and every package a notebook imports beyond gds_zarr's own dependencies."""
    import ast
    import re
    import tomllib

    root = NOTEBOOKS.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=;\[ ]", d)[0].lower()
             for d in [*project["dependencies"], *project["optional-dependencies"]["notebooks"]]}
    assert "jupyter" in names
    provided_by = {"IPython": "ipykernel"}  # a dependency of the kernel
    for name in ("quickstart.ipynb", "benchmarks.ipynb"):
        nb = json.loads((NOTEBOOKS / name).read_text())
        for cell in (c for c in nb["cells"] if c["cell_type"] == "code"):
            for node in ast.walk(ast.parse("".join(cell["source"]))):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
                for module in (m.split(".")[0] for m in modules):
                    if module in sys.stdlib_module_names or module in {"gds_zarr", "benchmarks"}:
                        continue
                    assert provided_by.get(module, module).lower() in names, (name, module)
    readme = (root / "README.md").read_text()
    section = readme.split("## Notebooks", 1)[1].split("\n## ", 1)[0]
    assert 'pip install -e ".[notebooks]"' in section


def test_the_readme_figure_command_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (the notebooks extra)")
    from benchmarks import latest

    run = latest.complete_run(latest.load_runs())
    assert latest.main(["--out", str(tmp_path / "fig.png")]) == 0
    assert (tmp_path / "fig.png").read_bytes().startswith(b"\x89PNG")
    assert f"from {run.stem} ({len(run.cases)} cases)" in capsys.readouterr().out
