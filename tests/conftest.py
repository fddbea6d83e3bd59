"""Shared fixtures for the CPU tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from gds_zarr.store import GDSStore


@pytest.fixture
def store(tmp_path: Path) -> GDSStore:
    """A writable GDSStore on a fresh directory."""
    return GDSStore(tmp_path / "store")
