"""What the VirtualiZarr tests share (CPU and GPU twins): an HDF5 file as netCDF4 writes them,
h5py's own reads of it, and ManifestStores over it (local, HTTP, S3, edited manifests).

Not a test module (no ``test_`` prefix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

#: Variables of :func:`write_hdf5`: name -> chunks stored (the rest are not written: fill).
STORED = {"t2m": 300, "precip": 15, "sparse": 3, "mask": 3, "wind": 40}


def write_hdf5(path: Path) -> dict[str, np.ndarray]:
    """An HDF5 file as netCDF4 writes them: gzip + shuffle (item sizes 4 and 8), fletcher32,
    fill values with chunks never written, big-endian, several variables; returns h5py's own
    reads of every variable (the reference)."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(22)
    with h5py.File(path, "w") as f:
        # 300 chunks: more than a few, so the read's coalescing shows in the counts.
        f.create_dataset("t2m", data=np.cumsum(rng.standard_normal((240, 320)), 1).astype("<f4"),
                         chunks=(16, 16), compression="gzip", compression_opts=4, shuffle=True)
        f.create_dataset("precip", data=rng.integers(0, 5000, (45, 70)).astype(">i4"),
                         chunks=(10, 25), compression="gzip", shuffle=True, fletcher32=True,
                         fillvalue=-1)
        sparse = f.create_dataset("sparse", shape=(40, 60), dtype="<f8", chunks=(10, 20),
                                  compression="gzip", shuffle=True, fletcher32=True,
                                  fillvalue=-9.5)
        sparse[0:10, 0:20] = rng.standard_normal((10, 20))
        sparse[30:40, 25:60] = 3.25  # two chunks, one of them in part
        f.create_dataset("mask", data=(rng.random((33, 20)) > 0.5).astype("u1"),
                         chunks=(11, 20), compression="gzip")
        f.create_dataset("wind", data=rng.standard_normal((20, 50)).astype(">f8"),
                         chunks=(5, 5), shuffle=True, fletcher32=True)  # no compressor
    with h5py.File(path, "r") as f:
        return {k: f[k][...] for k in STORED}


def local_store(path: Path) -> Any:
    """VirtualiZarr's HDF parser over a local file: a ManifestStore."""
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({"file://": LocalStore()})
    return HDFParser()(url=f"file://{path}", registry=registry)


def http_store(base_url: str, name: str) -> Any:
    """The parser over ``base_url/name`` served by a RangeServer (tests/_servers.py)."""
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import HTTPStore
    from virtualizarr.parsers import HDFParser

    client = HTTPStore.from_url(base_url, client_options={"allow_http": True})
    return HDFParser()(url=f"{base_url}/{name}", registry=ObjectStoreRegistry({base_url: client}))


def s3_store(client: Any, url: str) -> Any:
    """The parser over an object of an S3 server, read through ``client`` (an S3Store)."""
    from obspec_utils.registry import ObjectStoreRegistry
    from virtualizarr.parsers import HDFParser

    bucket = url.split("/")[2]
    return HDFParser()(url=url, registry=ObjectStoreRegistry({f"s3://{bucket}": client}))


def edited(store: Any, name: str, **arrays: np.ndarray) -> Any:
    """A ManifestStore holding only ``name`` of ``store``, its manifest's ``paths``, ``offsets``
    or ``lengths`` replaced (paths unvalidated: a relative path stays relative)."""
    from virtualizarr.manifests import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore

    old = store._group.arrays[name]
    m = old.manifest
    manifest = ChunkManifest.from_arrays(paths=arrays.get("paths", m._paths),
                                         offsets=arrays.get("offsets", m._offsets),
                                         lengths=arrays.get("lengths", m._lengths),
                                         validate_paths=False)
    group = ManifestGroup(arrays={name: ManifestArray(old.metadata, manifest)})
    return ManifestStore(group, registry=store._registry)


WINDOWS = [np.s_[3:29, 1:17], np.s_[0:1, 5:9], np.s_[7:19, 2:11]]
