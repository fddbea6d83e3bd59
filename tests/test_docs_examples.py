"""Every ```python block of README.md and docs/*.md runs as written (issue 20, item 4).

The README's first python block writes the sample arrays the others read (``data.zarr``,
``era5.zarr``, ``targets.zarr``); it runs once, in a temporary directory. Then the blocks of
each section (a ``##`` heading) run in order, as one script in a fresh interpreter in that
directory, as a reader would paste them: a section starts from nothing but those files, so it
imports what it uses. A section that imports an optional extra names it at its head
(``pip install -e ".[xarray]"``) and is skipped, with that reason, only where the extra is not
installed. Two sections need more than a package: "Remote data" reads ``s3://bucket/...`` from
moto's S3 server on 127.0.0.1 (configured through the ``AWS_*`` variables, as the README says),
and GPU examples (``import cupy``) run on the emulated device (``tests/emulated_gpu``).
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import os
import re
import shutil
import subprocess
import symtable
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EMULATED = ROOT / "tests" / "emulated_gpu"
#: Top-level modules that come with an extra, and that extra.
EXTRAS = {"xarray": "xarray", "dask": "dask", "distributed": "dask",
          "dask_cuda": "multigpu-cu12", "cupy": "cu12", "matplotlib": "notebooks",
          "virtualizarr": "virtualizarr", "h5py": "virtualizarr", "obspec_utils": "virtualizarr"}


@dataclass(frozen=True)
class Section:
    """The python blocks under one ``##`` heading of one document."""

    path: Path
    heading: str
    text: str  # the section's Markdown, code included
    blocks: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.path.name}::{self.heading}"

    @property
    def code(self) -> str:
        return "\n\n".join(self.blocks)


def sections(path: Path) -> list[Section]:
    """The sections of ``path`` that hold at least one ```python block, in order."""
    out: list[Section] = []
    heading, lines, blocks = "(top)", [], []
    lang: str | None = None  # inside a fence: its language
    code: list[str] = []
    for line in [*path.read_text().splitlines(), "## (end)"]:
        if lang is None and line.startswith("## "):
            if blocks:
                out.append(Section(path, heading, "\n".join(lines), tuple(blocks)))
            heading, lines, blocks = line[3:].strip(), [], []
        lines.append(line)
        if line.startswith("```") and lang is None:
            lang, code = line[3:].strip(), []
        elif line.startswith("```"):
            if lang == "python":
                blocks.append("\n".join(code) + "\n")
            lang = None
        elif lang is not None:
            code.append(line)
    return out


ALL = [s for path in DOCUMENTS for s in sections(path)]
SETUP = ALL[0].blocks[0]  # README "Usage": writes the sample arrays
RUNNABLE = [s if s.blocks[0] != SETUP else Section(s.path, s.heading, s.text, s.blocks[1:])
            for s in ALL]


def imported(code: str) -> set[str]:
    """Top-level names of the modules ``code`` imports."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def undefined_names(code: str) -> set[str]:
    """Names ``code`` reads that nothing in it defines (nor builtins), in any scope."""
    top = symtable.symtable(code, "<example>", "exec")
    defined = {s.get_name() for s in top.get_symbols()
               if s.is_assigned() or s.is_imported() or s.is_namespace()}
    missing = set()

    def walk(table: symtable.SymbolTable) -> None:
        for s in table.get_symbols():
            if s.is_referenced() and s.is_global() and s.get_name() not in defined:
                missing.add(s.get_name())
        for child in table.get_children():
            walk(child)

    walk(top)
    return {n for n in missing if not hasattr(builtins, n)}


@pytest.mark.parametrize("section", ALL, ids=lambda s: s.name)
def test_blocks_are_plain_python_with_every_name_defined(section: Section) -> None:
    """No top-level ``await`` (a SyntaxError outside a notebook) and no name the reader must
    guess (``corners``, ``inputs``, ``epochs``, ...): checked even where the section is
    skipped below."""
    for block in section.blocks:
        compile(block, section.name, "exec")  # a top-level await raises SyntaxError here
    assert not undefined_names(section.code), section.name


def test_the_checks_catch_what_issue_20_found() -> None:
    with pytest.raises(SyntaxError):
        compile("batch = await gds_zarr.aread_many(z, sels)\n", "<x>", "exec")
    code = "import gds_zarr\nsels = [(t, y) for t, y in corners]\nfor e in range(epochs):\n  pass\n"
    assert undefined_names(code) == {"corners", "epochs"}


@pytest.mark.parametrize("section", ALL, ids=lambda s: s.name)
def test_each_section_names_the_extra_it_needs(section: Section) -> None:
    for module in sorted(imported(section.code)):
        extra = EXTRAS.get(module)
        if extra is None or (extra == "cu12" and section.path.name != "README.md"):
            continue  # the GPU extras have a README section of their own
        head = section.text.split("```python")[0]
        assert f'pip install -e ".[{extra}]"' in head, (
            f"{section.name} imports {module}: name the extra before the code "
            f'(pip install -e ".[{extra}]")')


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the README's sample arrays, written by its first python block."""
    where = tmp_path_factory.mktemp("examples")
    _run(SETUP, where, {})
    assert (where / "data.zarr" / "zarr.json").exists()
    return where


def _run(code: str, cwd: Path, env: dict[str, str], pythonpath: list[Path] | None = None
         ) -> None:
    path = [*(pythonpath or []), ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env,
                                            "PYTHONPATH": os.pathsep.join(map(str, path))})
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-4000:]}"


@pytest.fixture
def s3_env(workdir: Path) -> Iterator[dict[str, str]]:
    """``s3://bucket/era5.zarr`` on moto's server, and the AWS_* variables that reach it."""
    pytest.importorskip("moto", reason="moto is not installed (the test extra)")
    import obstore
    from _servers import create_bucket, start_moto
    from obstore.store import S3Store

    with start_moto() as endpoint:
        create_bucket(endpoint, "bucket")
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
        s3 = S3Store("bucket", endpoint=endpoint, region="us-east-1", access_key_id="testing",
                     secret_access_key="testing", client_options={"allow_http": True})
        for f in (workdir / "era5.zarr").rglob("*"):
            if f.is_file():
                obstore.put(s3, f.relative_to(workdir).as_posix(), f.read_bytes())
        yield env


@pytest.mark.parametrize("section", [s for s in RUNNABLE if s.blocks], ids=lambda s: s.name)
def test_section_runs_as_written(section: Section, workdir: Path,
                                 request: pytest.FixtureRequest) -> None:
    modules = imported(section.code)
    for module in sorted(modules):
        if module in EXTRAS and module != "cupy" and importlib.util.find_spec(module) is None:
            extra = EXTRAS[module]
            pytest.skip(f'{section.name} needs the {extra} extra: pip install -e ".[{extra}]"')
    env: dict[str, str] = {}
    pythonpath: list[Path] = []
    if "s3://" in section.code:
        env = request.getfixturevalue("s3_env")
    if "cupy" in modules:
        if shutil.which("g++") is None:
            pytest.skip("the emulated GPU compiles its kernels with g++, which is missing")
        pythonpath = [EMULATED]  # the emulated device, whatever this machine has
        env = {"EMULATED_GPU_DEVICES": "2"}
    _run(section.code, workdir, env, pythonpath)


def test_every_readme_section_with_code_runs() -> None:
    """The README's sections with python blocks, so none is dropped by a heading change."""
    readme = [s.heading for s in ALL if s.path.name == "README.md"]
    assert readme == ["Usage", "Remote data", "netCDF4/HDF5 files (VirtualiZarr)",
                      "Training on windows", "xarray", "Dask"]
    assert re.search(r"zarr\.create_array\(\"data\.zarr\"", SETUP)
