"""What zarr's StoreTests needs from a GDSStore subclass of it, shared by the CPU suite
(tests/test_store_conformance.py) and its GPU twin (tests_gpu/test_store_gpu.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gds_zarr.store import GDSStore


class OnDisk:
    """StoreTests hooks that read and write the files under the store's root directly."""

    buffer_cls: Any

    async def get(self, store: GDSStore, key: str) -> Any:
        return self.buffer_cls.from_bytes((store.root / key).read_bytes())

    async def set(self, store: GDSStore, key: str, value: Any) -> None:
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(value.to_bytes())

    @pytest.fixture
    def store_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        return {"root": str(tmp_path)}
