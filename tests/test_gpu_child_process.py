"""tests_gpu's ``fresh_process`` marker, checked on the CPU: such a test runs in a child process
of its own (so a device fault cannot poison later tests), and its outcome is the parent's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = f"""
import importlib.util
spec = importlib.util.spec_from_file_location(
    "gpu_conftest", {str(ROOT / "tests_gpu" / "conftest.py")!r})
gpu_conftest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_conftest)
pytest_configure = gpu_conftest.pytest_configure
pytest_pyfunc_call = gpu_conftest.pytest_pyfunc_call
"""

TESTS = """
import os
from pathlib import Path

import pytest

OUT = Path(__file__).parent / "pids"


def _record(name):
    with open(OUT, "a") as f:
        f.write(f"{name} {os.getpid()} {os.environ.get('GDS_ZARR_TEST_CHILD', '0')}\\n")


@pytest.mark.fresh_process
@pytest.mark.parametrize("n", [1, 2])
def test_isolated(n):
    _record(f"isolated[{n}]")


@pytest.mark.fresh_process
def test_isolated_failing():
    _record("failing")
    os._exit(3)  # as a process killed by a fault would end


def test_here():
    _record("here")
"""


def test_fresh_process_tests_run_in_children(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_it.py").write_text(TESTS)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out  # the failing child fails the parent's test
    assert "1 failed, 3 passed" in out, out
    assert "in its child process (exit" in out, out
    rows = [line.split() for line in (tmp_path / "pids").read_text().splitlines()]
    pids = {name: (int(pid), child) for name, pid, child in rows}
    assert pids["here"][1] == "0"
    for name in ("isolated[1]", "isolated[2]", "failing"):
        assert pids[name][1] == "1", rows  # ran in a child
    # One child each, none of them the parent.
    assert len({pids[n][0] for n in pids}) == 4, rows
