"""GPU tests: every test here is skipped cleanly when the GPU path cannot run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gds_zarr._device import gpu_status

_HERE = Path(__file__).parent
# The GPU twins reuse the CPU suite's case modules (tests/pipeline_cases.py, store_cases.py).
sys.path.insert(0, str(_HERE.parent / "tests"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session: mark only the tests that live in tests_gpu/.
    status = gpu_status()
    if status.usable:
        return
    skip = pytest.mark.skip(reason=f"no usable GPU: {status.reason}")
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(skip)
