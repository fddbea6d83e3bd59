"""GPU tests: every test here is skipped cleanly when the GPU path cannot run.

``GDS_ZARR_TEST_DEVICE`` chooses the device: unset, the real GPU where one is usable (else every
test skips); ``emulated``, the emulated CUDA device of tests/emulated_gpu/ (stand-ins for CuPy,
kvikio and nvCOMP, put first on ``sys.path`` here and on ``PYTHONPATH`` for child processes);
``gpu``, a real GPU that must be usable (a test session that would skip fails instead).
Tests marked ``emulator`` test the emulated device itself and run only on it.

Tests marked ``fresh_process`` (those that feed corrupt data to nvCOMP, or provoke a device
fault) run each in a child process: nvCOMP documents invalid input as undefined behaviour, and
an illegal address kills the CUDA context of the whole process, which would fail every later
test for a reason that is not theirs. ``pytest -m "not fresh_process"`` runs the happy paths.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).parent
# Before gds_zarr (and so zarr's GPU buffer module) is imported: the emulated CuPy must be the
# one every module sees.
_DEVICE = os.environ.get("GDS_ZARR_TEST_DEVICE", "")
if _DEVICE not in ("", "emulated", "gpu"):
    raise pytest.UsageError(f"GDS_ZARR_TEST_DEVICE={_DEVICE!r}: expected 'emulated', 'gpu' or "
                            f"unset")
EMULATED = _DEVICE == "emulated"
if EMULATED:
    _EMULATOR = str(_HERE.parent / "tests" / "emulated_gpu")
    _cupy = sys.modules.get("cupy")
    if _cupy is not None and not getattr(_cupy, "__emulated__", False):
        raise pytest.UsageError("GDS_ZARR_TEST_DEVICE=emulated, but the real CuPy was imported "
                                "first: put tests/emulated_gpu first on PYTHONPATH")
    if _EMULATOR not in sys.path:
        sys.path.insert(0, _EMULATOR)
    if _EMULATOR not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (_EMULATOR, os.environ.get("PYTHONPATH")) if p)
    # pytest imports zarr before any conftest (the ini's warning filters name a zarr class),
    # and zarr's GPU buffer module then found no CuPy: import it again now that there is one.
    _zarr_gpu = sys.modules.get("zarr.core.buffer.gpu")
    if _zarr_gpu is not None and getattr(_zarr_gpu, "cp", None) is None:
        import importlib

        importlib.reload(_zarr_gpu)

from gds_zarr._device import gpu_status  # after the emulator's path is set

# The GPU twins reuse the CPU suite's case modules (tests/pipeline_cases.py, store_cases.py).
sys.path.insert(0, str(_HERE.parent / "tests"))

_CHILD_ENV = "GDS_ZARR_TEST_CHILD"
_CHILD_TIMEOUT = 150  # under the GPU session's --timeout=180: the parent reports a hang


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fresh_process: run in a child process of its own (corrupt input to nvCOMP, "
                   "device faults)")
    config.addinivalue_line(
        "markers", "emulator: a test of the emulated device itself (GDS_ZARR_TEST_DEVICE=emulated)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session: mark only the tests that live in tests_gpu/.
    status = gpu_status()
    if _DEVICE and not status.usable:
        raise pytest.UsageError(f"GDS_ZARR_TEST_DEVICE={_DEVICE}, but the GPU path cannot run: "
                                f"{status.reason}")
    not_emulated = pytest.mark.skip(reason="tests the emulated device (GDS_ZARR_TEST_DEVICE="
                                           "emulated)")
    skip = pytest.mark.skip(reason=f"no usable GPU: {status.reason}")
    for item in items:
        if _HERE not in Path(str(item.path)).parents:
            continue
        if item.get_closest_marker("emulator") is not None and not EMULATED:
            item.add_marker(not_emulated)
        elif not status.usable:
            item.add_marker(skip)


def in_child() -> bool:
    """True inside the child process a ``fresh_process`` test runs in."""
    return os.environ.get(_CHILD_ENV) == "1"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a ``fresh_process`` test as ``python -m pytest <its node id>`` in a child."""
    if pyfuncitem.get_closest_marker("fresh_process") is None or in_child():
        return None  # run here, as usual
    env = {**os.environ, _CHILD_ENV: "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
           "--rootdir", str(pyfuncitem.config.rootpath), pyfuncitem.nodeid]
    try:
        done = subprocess.run(cmd, cwd=pyfuncitem.config.rootpath, env=env, text=True,
                              capture_output=True, timeout=_CHILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"child process timed out after {_CHILD_TIMEOUT} s (a hang in nvCOMP?): "
                    f"{(e.stdout or '')[-4000:]}", pytrace=False)
    if done.returncode == 5:  # the child collected nothing: the id did not resolve
        pytest.fail(f"the child collected no test for {pyfuncitem.nodeid}", pytrace=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-6000:]
        pytest.fail(f"in its child process (exit {done.returncode}):\n{tail}", pytrace=False)
    if " skipped" in done.stdout and " passed" not in done.stdout:
        pytest.skip(f"skipped in its child process: {done.stdout.strip()[-500:]}")
    return True
