"""GDSStore: a zarr v3 store for local directories with batched reads."""

from __future__ import annotations

from gds_zarr.store._store import GDSStore

__all__ = ["GDSStore"]
