"""The gds-zarr command: info, settings and demo, in-process and as ``python -m gds_zarr``."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from gds_zarr import settings
from gds_zarr.cli import main
from gds_zarr.cli._demo import (
    DemoRead,
    parse_shape,
    read_with_gds,
    read_with_zarr,
    run_demo,
    sample_data,
    write_sample,
)

SMALL = "256x192"


pytestmark = pytest.mark.usefixtures("fresh_gpu_status")


def test_settings_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    assert capsys.readouterr().out == settings.markdown_table() + "\n"


def test_info_text(no_gpu_libs: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "device:       auto -> cpu" in out
    assert "auto fell back to the CPU: CuPy is not importable" in out


def test_info_json_subprocess_stdout_is_pure_json() -> None:
    # A subprocess: native libraries (libcufile) print to fd 1 and must not corrupt the JSON.
    r = subprocess.run([sys.executable, "-m", "gds_zarr", "info", "--json"],
                       capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["device"]["device"] in ("cpu", "gpu")
    assert report["device"]["reason"]
    if not report["cupy"]["importable"] or not report["gpu"]["driver_loaded"]:
        assert report["device"]["device"] == "cpu"
        assert report["device"]["reason"].startswith("auto fell back to the CPU")


def test_bad_subcommand_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2


def test_parse_shape() -> None:
    assert parse_shape("2048x2048") == (2048, 2048)
    assert parse_shape("16,32,8") == (16, 32, 8)
    for bad in ("", "0x4", "ax4", "-3"):
        with pytest.raises(ValueError):
            parse_shape(bad)


def test_demo_bad_shape_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--shape", "12xq"]) == 2
    assert "cannot parse shape" in capsys.readouterr().err


def test_write_sample_layouts(tmp_path: Path) -> None:
    import zarr

    data = sample_data((100, 70))
    chunked = zarr.open_array(str(write_sample(tmp_path, data, sharded=False, chunk=16)))
    sharded = zarr.open_array(str(write_sample(tmp_path, data, sharded=True, chunk=16)))
    assert chunked.chunks == (16, 16) and chunked.shards is None
    assert sharded.chunks == (16, 16) and sharded.shards == (112, 80)  # whole chunks, <= 8 each
    np.testing.assert_array_equal(chunked[...], data)
    np.testing.assert_array_equal(sharded[...], data)


def test_demo_logic_with_zarr_reader(tmp_path: Path) -> None:
    lines: list[str] = []
    assert run_demo("cpu", parse_shape(SMALL), tmp_path, repeat=1, reader=read_with_zarr,
                    echo=lines.append) == 0
    text = "\n".join(lines)
    assert text.count("values: match zarr") == 2 and lines[-1] == "ok"
    assert (tmp_path / "chunked.zarr" / "zarr.json").exists()
    assert (tmp_path / "sharded.zarr" / "zarr.json").exists()


def test_demo_reports_a_mismatch(tmp_path: Path) -> None:
    def corrupt(path: Path, device: Literal["cpu", "gpu"], repeat: int) -> DemoRead:
        got = read_with_zarr(path, device, repeat)
        values = got.values.copy()
        values.flat[values.size // 2] += 1
        return replace(got, values=values)

    lines: list[str] = []
    assert run_demo("cpu", (64, 64), None, repeat=1, reader=corrupt, echo=lines.append) == 1
    assert "  values: MISMATCH with zarr" in lines and lines[-1].startswith("FAILED")


def test_demo_through_gds_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keep = tmp_path / "kept"
    assert main(["demo", "--device", "cpu", "--shape", SMALL, "--repeat", "2",
                 "--keep", str(keep)]) == 0
    out = capsys.readouterr().out
    assert "device: cpu -> cpu" in out
    assert "via gds_zarr.GDSCodecPipeline" in out
    assert out.count("values: match zarr") == 2
    assert "GB/s decoded" in out and "chunks/s" in out
    assert f"kept: {keep}" in out and (keep / "sharded.zarr").is_dir()


def test_read_with_gds_counts_the_fast_path(tmp_path: Path) -> None:
    data = sample_data((128, 128))
    path = write_sample(tmp_path, data, sharded=True)
    got = read_with_gds(path, "cpu", 1)
    np.testing.assert_array_equal(got.values, data)
    assert got.output_type == "numpy.ndarray"
    assert any("batched read(s)" in n for n in got.notes)


def test_demo_gpu_without_gpu_exits_2(no_gpu_libs: None,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--device", "gpu", "--shape", "64x64"]) == 2
    err = capsys.readouterr().err
    assert "'gpu' was requested" in err and "CuPy is not importable" in err


def test_python_m_gds_zarr_demo_subprocess() -> None:
    r = subprocess.run([sys.executable, "-m", "gds_zarr", "demo", "--device", "cpu",
                        "--shape", "128x128", "--repeat", "1"],
                       capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.rstrip().endswith("ok")


def test_version_and_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    """``--version`` prints the one version; every subcommand has a description."""
    import gds_zarr
    from gds_zarr.cli import _parser

    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"gds-zarr {gds_zarr.__version__}"
    sub = next(a for a in _parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():  # type: ignore[union-attr]
        assert parser.description, name


def test_the_version_and_license_are_written_once() -> None:
    """pyproject takes the version from gds_zarr/__init__.py; LICENSE is the Apache-2.0 text
    pyproject names."""
    import importlib.metadata
    import tomllib
    from pathlib import Path

    import gds_zarr

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("gds-zarr") == gds_zarr.__version__
    assert project["license"] == "Apache-2.0"
    text = (root / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "gds_zarr", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})}, check=False)


def test_a_bad_environment_variable_is_one_line_and_exit_2() -> None:
    """Issue 20, items 1 and 5: ``info`` included, one line naming the variable, no traceback."""
    for cmd in (["info"], ["info", "--json"], ["demo", "--shape", "64x64", "--repeat", "1"]):
        done = _cli(*cmd, env={"GDS_ZARR_MEMORY_BUDGET": "lots"})
        assert done.returncode == 2, (cmd, done)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "GDS_ZARR_MEMORY_BUDGET='lots'" in lines[0], (cmd, done.stderr)
        assert "Traceback" not in done.stderr
    debug = _cli("--debug", "info", env={"GDS_ZARR_MEMORY_BUDGET": "lots"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_closed_pipe_ends_quietly() -> None:
    """``gds-zarr settings | head -1``: no BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "gds_zarr", "settings"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    # The reader goes away before the table is written (the child is still importing): the
    # write meets a pipe without a reader, as ``| head`` leaves a long output.
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and err == "", err
