"""Shared fixtures for the CPU tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpu_env import GPU_MODULES

from gds_zarr._device import gpu_status
from gds_zarr.store import GDSStore

# benchmarks/ is a repository package, not installed with gds_zarr: make it importable however
# pytest is started (``python -m pytest`` puts the cwd on sys.path, plain ``pytest`` does not).
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture
def fresh_gpu_status() -> Iterator[None]:
    """The GPU probe runs anew in the test and leaves no cached answer behind."""
    gpu_status.cache_clear()
    yield
    gpu_status.cache_clear()


@pytest.fixture
def no_gpu_libs(monkeypatch: pytest.MonkeyPatch, fresh_gpu_status: None) -> None:
    """CuPy, kvikio, nvCOMP and pynvml are not importable, and GDS_ZARR_DEVICE is unset."""
    for name in GPU_MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delenv("GDS_ZARR_DEVICE", raising=False)


@pytest.fixture
def store(tmp_path: Path) -> GDSStore:
    """A writable GDSStore on a fresh directory."""
    return GDSStore(tmp_path / "store")
