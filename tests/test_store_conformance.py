"""zarr's own store conformance suite, run against GDSStore with CPU buffers."""

from __future__ import annotations

import pickle
from typing import Any

from store_cases import OnDisk
from zarr.core.buffer import cpu
from zarr.testing.store import StoreTests

from gds_zarr.store import GDSStore


class TestGDSStore(OnDisk, StoreTests[GDSStore, cpu.Buffer]):
    store_cls = GDSStore
    buffer_cls = cpu.Buffer

    def test_store_repr(self, store: GDSStore) -> None:
        assert repr(store) == f"GDSStore('file://{store.root.as_posix()}', read_only=False)"
        assert str(store) == f"file://{store.root.as_posix()}"

    def test_store_supports_writes(self, store: GDSStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: GDSStore) -> None:
        assert store.supports_listing

    def test_pickle_keeps_read_only(self, store_kwargs: dict[str, Any]) -> None:
        ro = GDSStore(**store_kwargs, read_only=True)
        clone = pickle.loads(pickle.dumps(ro))
        assert clone == ro and clone.read_only and clone.root == ro.root
