"""Batched reads of the chunks a VirtualiZarr ``ManifestStore`` addresses (netCDF4/HDF5 files
and other archives seen as virtual Zarr).

A ``ManifestStore`` answers zarr's reads key by key: ``get`` looks up one chunk's (file, offset,
length) and fetches that range through obstore, and it has no batched read
(``get_partial_values`` raises ``NotImplementedError``). :class:`ManifestReader` reads a whole
batch of chunk keys the way :class:`~gds_zarr.GDSStore` reads its own keys:

1. the keys become grid coordinates and the coordinates byte ranges of files in one pass over
   the manifest's numpy arrays (:mod:`gds_zarr.planning.manifest`: no Python object per chunk);
2. every distinct file is located once, through the store's own registry exactly as ``get``
   would (same store, same path), and cached;
3. each group of files is ONE call of a batched I/O backend, which coalesces the ranges of a
   file and lands every byte in one buffer:

   =====================  ============================  =====================================
   file                   host                          device
   =====================  ============================  =====================================
   local (``file://``)    PosixIOBackend (preadv)       KvikioIOBackend (kvikio, to the GPU)
   s3, http(s)            ObstoreIOBackend (the          kvikio RemoteFile where the store is
                          registry's obstore store)     configured as kvikio reads it, else
                                                        obstore + one copy per batch
   gs, az                 ObstoreIOBackend              obstore + one copy per batch
   =====================  ============================  =====================================

What is refused, with a :class:`~gds_zarr.errors.ChunkReadError` naming the chunk key and the
file: a manifest path that is neither absolute nor a URL, a file that does not exist, a range
that runs past the end of its file. A chunk whose path is empty is not stored: ``present`` is
False and the pipeline writes the fill value. Anything this module does not read itself (a key
that is not a chunk of a manifest array, a store in the registry that is not obstore's, a scheme
it has no backend for) makes :meth:`ManifestReader.read_batch` return None: the caller reads
those keys through the store's ``get``, the reference.

virtualizarr is never imported here: a ``ManifestStore`` can only exist where it was imported.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import numpy as np

from gds_zarr._batch import BatchRead
from gds_zarr.errors import ChunkReadError
from gds_zarr.io._base import IOStats
from gds_zarr.planning.manifest import (
    ManifestRequests,
    grid_coords,
    parse_chunk_keys,
    resolve_requests,
)
from gds_zarr.store._url import SCHEMES, Redactor, RemoteLocation, _secret_values, parse_url

__all__ = ["ManifestReader", "manifest_reader"]

Device = Literal["cpu", "gpu"]

_READERS: dict[int, ManifestReader] = {}
_READERS_LOCK = threading.Lock()


def manifest_reader(store: Any) -> ManifestReader | None:
    """The batched reader of ``store`` if it is a VirtualiZarr ``ManifestStore``, else None.

    One reader per store object, kept while the store lives (its located files and backends
    are reused by every read).
    """
    module = sys.modules.get("virtualizarr.manifests.store")
    if module is None or not isinstance(store, module.ManifestStore):
        return None
    with _READERS_LOCK:
        reader = _READERS.get(id(store))
        if reader is None or reader.store() is not store:
            reader = _READERS[id(store)] = ManifestReader(store)
            weakref.finalize(store, _forget, id(store), reader)
    return reader


def _forget(ident: int, reader: ManifestReader) -> None:
    with _READERS_LOCK:
        if _READERS.get(ident) is reader:
            del _READERS[ident]
    reader.close()


@dataclass(frozen=True, slots=True)
class _Array:
    """What reading one manifest array's chunks needs, found once per array."""

    prefix: str                  # every chunk key starts with it (the key itself if 0-d)
    separator: str
    grid: tuple[int, ...]
    manifest: Any                # virtualizarr's ChunkManifest


@dataclass(frozen=True, slots=True)
class _Where:
    """Where one manifest path is read: a backend group and the path that backend takes."""

    group: tuple[Any, ...]       # ("local",) or ("remote", id(client))
    path: str                    # absolute file path, or object path inside the store
    url: str                     # the manifest's own path or URL, for messages
    client: Any = None           # the registry's obstore store of a remote file


class _Unhandled(Exception):
    """A batch this module does not read: the caller reads it key by key."""


class _NotAbsolute(ValueError):
    """A manifest path that is neither absolute nor a URL (VirtualiZarr requires one)."""


class ManifestReader:
    """Batched reads of a ``ManifestStore``'s chunks (see the module docstring).

    Parameters
    ----------
    store
        A ``virtualizarr.manifests.ManifestStore``.
    """

    def __init__(self, store: Any) -> None:
        self.store = weakref.ref(store)
        self._group = store._group  # the store keeps no public handle on its root group
        self._registry = store._registry
        self._arrays: dict[str, _Array | None] = {}
        self._where: dict[str, _Where | None] = {}
        self._backends: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release the backends (open file handles of the GPU backend, ...)."""
        with self._lock:
            backends, self._backends = list(self._backends.values()), {}
        for b in backends:
            b.close()

    # ------------------------------------------------------------------ counters

    def io_stats(self, device: Device = "cpu") -> IOStats:
        """The I/O counters of every backend this reader used for ``device``, summed (a new
        object: take one before and one after a read to count it)."""
        total = IOStats()
        with self._lock:
            seen = {id(b.stats): b.stats for k, b in self._backends.items() if k[-1] == device}
        for s in seen.values():
            total.add(files_opened=s.files_opened, reads=s.reads, bytes_read=s.bytes_read,
                      requests=s.requests, uncached=s.uncached)
        return total

    # ------------------------------------------------------------------ the batched read

    def read_batch(self, keys: Sequence[str], starts: np.ndarray, stops: np.ndarray, *,
                   device: Device = "cpu") -> BatchRead | None:
        """Read request ``i`` = bytes ``[starts[i], stops[i])`` of chunk ``keys[i]`` (encoded
        as in ``gds_zarr/io/_base.py``) in one batched backend call per group of files.
        Blocking.

        Returns
        -------
        BatchRead or None
            ``present`` False for chunks that are not stored. None when the batch is not made
            of chunks this reader resolves (see the module docstring): read it key by key.

        Raises
        ------
        ChunkReadError
            A manifest path that is not absolute, a file that does not exist, a range past
            the end of its file, or a read that failed; it names the key and the file.
        """
        keys = list(keys)
        if not keys:
            return None
        array = self._array(keys[0])
        if array is None:
            return None
        m = array.manifest
        flat = parse_chunk_keys(keys, array.prefix, array.separator, array.grid)
        if flat is None:
            return None
        req = resolve_requests(m._paths, m._offsets, m._lengths, flat, starts, stops)
        try:
            where = [self._locate(f, keys, req, i) for i, f in enumerate(req.files)]
        except _Unhandled:
            return None
        return self._read(keys, req, where, array, device)

    def _array(self, key: str) -> _Array | None:
        """The manifest array ``key`` is a chunk of (found by walking the store's groups as its
        ``get`` does), or None."""
        node, path = self._group, []
        for part in key.split("/")[:-1]:
            path.append(part)
            if part in node.arrays:
                name = "/".join(path)
                if name not in self._arrays:
                    self._arrays[name] = _describe(name, node.arrays[part])
                found = self._arrays[name]
                return found if found is not None and key.startswith(found.prefix) else None
            if part not in node.groups:
                return None
            node = node.groups[part]
        return None

    def _locate(self, path: str, keys: Sequence[str], req: ManifestRequests,
                index: int) -> _Where | None:
        """Where manifest path ``path`` (file ``index`` of the batch) is read; None for the
        sentinels (not stored, inlined)."""
        if path in ("", "__inlined__"):
            return None
        if path not in self._where:
            try:
                self._where[path] = _where(path, self._registry)
            except _NotAbsolute:
                key = keys[int(np.flatnonzero(req.file_of == index)[0])]
                raise ChunkReadError(key, f"the manifest's path {path!r} is neither an "
                                          f"absolute path nor a URL") from None
        found = self._where[path]
        if found is None:
            raise _Unhandled(path)
        return found

    def _read(self, keys: list[str], req: ManifestRequests, where: list[_Where | None],
              array: _Array, device: Device) -> BatchRead:
        n = len(keys)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, w in enumerate(where):
            if w is not None:
                groups.setdefault(w.group, []).append(i)
        parts: list[tuple[np.ndarray, BatchRead]] = []
        for files in groups.values():
            rows = np.flatnonzero(np.isin(req.file_of, files))
            first = where[files[0]]
            assert first is not None
            parts.append((rows, self._read_group(first, device, keys, req, where, rows)))
        inlined = np.flatnonzero(req.inlined)
        if len(inlined):
            parts.append((inlined, _inlined(array, req, inlined)))
        return _merge(parts, n, device)

    def _read_group(self, first: _Where, device: Device, keys: list[str],
                    req: ManifestRequests, where: list[_Where | None],
                    rows: np.ndarray) -> BatchRead:
        """One backend call for the requests ``rows`` (the files of ``first``'s group),
        checked."""
        paths = np.array([w.path if w is not None else "" for w in where], dtype=object)
        file_paths = paths[req.file_of[rows]].tolist()  # references to a few str objects
        starts, stops = req.starts[rows], req.stops[rows]
        backend = self._backend(first, device)
        expected = stops - starts
        try:
            batch = backend.read_batch(file_paths, starts, stops,
                                       size_hint=int(expected.max(initial=0)))
        except ChunkReadError as e:
            at = [j for j, p in enumerate(file_paths) if p == e.key]
            j = at[0] if at else 0
            w = where[int(req.file_of[rows[j]])]
            raise ChunkReadError(keys[int(rows[j])],
                                 f"{e.reason} (reading {w.url if w else e.key})") from None
        gone = ~np.asarray(batch.present, bool)
        short = ~gone & (np.asarray(batch.sizes, np.int64) != expected)
        if gone.any() or short.any():
            j = int(np.flatnonzero(gone | short)[0])
            w = where[int(req.file_of[rows[j]])]
            url = w.url if w is not None else "?"
            if gone[j]:
                reason = f"{url}, which the manifest names, does not exist"
            else:
                reason = (f"the manifest's bytes [{int(starts[j])}, {int(stops[j])}) run past "
                          f"the end of {url} (only {int(batch.sizes[j])} of "
                          f"{int(expected[j])} bytes exist)")
            raise ChunkReadError(keys[int(rows[j])], reason)
        return batch  # type: ignore[no-any-return]

    def _backend(self, where: _Where, device: Device) -> Any:
        """The I/O backend of ``where``'s group of files for ``device``, made once."""
        key = (*where.group, device)
        with self._lock:
            backend = self._backends.get(key)
            if backend is None:
                backend = self._backends[key] = _make_backend(where, device, self._backends)
        return backend


def _describe(name: str, array: Any) -> _Array | None:
    """How the chunk keys of manifest array ``name`` are spelled (zarr's chunk key encodings)."""
    from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding, V2ChunkKeyEncoding

    enc = array.metadata.chunk_key_encoding
    sep = str(getattr(enc, "separator", "/"))
    grid = tuple(int(g) for g in array.manifest.shape_chunk_grid)
    if isinstance(enc, DefaultChunkKeyEncoding):
        prefix = f"{name}/c" if not grid else f"{name}/c{sep}"
    elif isinstance(enc, V2ChunkKeyEncoding):
        prefix = f"{name}/0" if not grid else f"{name}/"
    else:
        return None  # an encoding of its own: the store's get parses it
    return _Array(prefix, sep, grid, array.manifest)


def _path_in_store(store: Any, url: str) -> str:
    """The path ``ManifestStore.get`` asks ``store`` for, for the manifest's ``url``."""
    path = urlsplit(url).path
    if getattr(store, "prefix", None):
        prefix = str(store.prefix).lstrip("/")
    elif hasattr(store, "url"):
        prefix = urlsplit(store.url).path.lstrip("/")
    else:
        prefix = ""
    return path.lstrip("/").removeprefix(prefix).lstrip("/")


def _where(path: str, registry: Any) -> _Where | None:
    """Locate one manifest path (see :class:`ManifestReader`); None for what this module does
    not read.

    Raises
    ------
    _NotAbsolute
        A path that is neither absolute nor a URL.
    """
    import obstore.store as ost

    url = path
    scheme = urlsplit(path).scheme.lower()
    if not scheme:
        if not path.startswith("/"):
            raise _NotAbsolute(path)
        url = "file://" + path  # an absolute path, as VirtualiZarr normalizes it
        scheme = "file"
    try:
        store, _ = registry.resolve(url)
    except ValueError:
        return None  # no store for it: get raises the registry's own error
    if scheme == "file":
        netloc = urlsplit(url).netloc
        if not isinstance(store, ost.LocalStore) or netloc not in ("", "localhost"):
            return None
        root = str(store.prefix) if store.prefix else "/"
        local = os.path.join(root, unquote(_path_in_store(store, url)))
        return _Where(("local",), local, url)
    if SCHEMES.get(scheme) is None or not isinstance(
            store, (ost.S3Store, ost.HTTPStore, ost.GCSStore, ost.AzureStore)):
        return None
    return _Where(("remote", id(store)), _path_in_store(store, url), url, store)


def _make_backend(where: _Where, device: Device, made: dict[tuple[Any, ...], Any]) -> Any:
    """A backend for ``where``'s group (``made``: the reader's backends, the CPU one of a remote
    store shared with its device backend)."""
    group = where.group
    if group == ("local",):
        if device == "gpu":
            from gds_zarr.io._gpu import KvikioIOBackend

            return KvikioIOBackend()
        from gds_zarr.io._cpu import PosixIOBackend

        return PosixIOBackend()
    client = where.client
    cpu = made.get((*group, "cpu"))
    if cpu is None:
        from gds_zarr.io._remote import ObstoreIOBackend

        # Secrets of the registry's store (and the environment's) never reach a message.
        redact = Redactor(_secret_values(dict(getattr(client, "config", None) or {})))
        cpu = made[(*group, "cpu")] = ObstoreIOBackend(client, _object_url(client), redact)
    if device == "cpu":
        return cpu
    from gds_zarr.io._remote_gpu import (
        HostStagedIOBackend,
        KvikioRemoteIOBackend,
        remote_gpu_choice,
    )

    location = kvikio_location(client)
    if location is not None and remote_gpu_choice(location)[0] == "kvikio RemoteFile":
        return _sized_once(KvikioRemoteIOBackend)(location, cpu)
    return HostStagedIOBackend(cpu)


@functools.cache
def _sized_once(base: type) -> type:
    """``KvikioRemoteIOBackend`` that sizes each archive file once (a HEAD the first time it is
    read): kvikio's preads need the size, and the files a manifest names do not change under
    it (a rewritten file invalidates the manifest itself), so later batches are one round."""

    class SizedOnce(base):  # type: ignore[misc]
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self._known: dict[str, int] = {}

        def _sizes(self, files: list[str]) -> np.ndarray:
            need = [f for f in files if f not in self._known]
            if need:
                for f, size in zip(need, super()._sizes(need).tolist(), strict=True):
                    if size >= 0:  # a missing file is asked again next time
                        self._known[f] = size
            return np.array([self._known.get(f, -1) for f in files], np.int64)

    return SizedOnce


def _object_url(client: Any) -> Callable[[str], str]:
    """``object_url(path)`` for messages about objects of a registry's store."""
    import obstore.store as ost

    if isinstance(client, ost.HTTPStore):
        root = str(client.url).rstrip("/")
    else:
        config = dict(getattr(client, "config", None) or {})
        scheme = "az" if isinstance(client, ost.AzureStore) else (
            "gs" if isinstance(client, ost.GCSStore) else "s3")
        bucket = config.get("bucket") or config.get("container_name") or ""
        prefix = str(getattr(client, "prefix", None) or "").strip("/")
        root = f"{scheme}://{bucket}/{prefix}" if prefix else f"{scheme}://{bucket}"
    return lambda path: f"{root}/{path}"


# S3 settings of an obstore store, and the environment variable kvikio reads each from.
_S3_ENV = {"endpoint": ("AWS_ENDPOINT_URL", "AWS_ENDPOINT"),
           "access_key_id": ("AWS_ACCESS_KEY_ID",),
           "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
           "session_token": ("AWS_SESSION_TOKEN",), "token": ("AWS_SESSION_TOKEN",)}


def kvikio_location(client: Any) -> RemoteLocation | None:
    """A :class:`RemoteLocation` through which kvikio's ``RemoteFile`` reads the same objects as
    the registry's ``client`` at the same paths, or None where it cannot: kvikio takes S3
    settings from the environment only, so an S3 store qualifies when it has no prefix and
    every endpoint and credential it holds is the environment's; an HTTP store when it has no
    path of its own (kvikio gets whole URLs)."""
    import obstore.store as ost

    if isinstance(client, ost.HTTPStore):
        parts = urlsplit(str(client.url))
        if parts.path.strip("/") or parts.username or parts.query:
            return None
        return parse_url(f"{parts.scheme}://{parts.netloc}")
    if not isinstance(client, ost.S3Store) or client.prefix:
        return None
    config = dict(client.config)
    for name, env in _S3_ENV.items():
        value = config.get(name)
        if value and value not in {os.environ.get(e) for e in env}:
            return None
    anon = str(config.get("skip_signature", "")).lower() in ("true", "1")
    return RemoteLocation("s3", f"s3://{config['bucket']}", str(config["bucket"]), "",
                          options={"anon": True} if anon else {})


def _inlined(array: _Array, req: ManifestRequests, rows: np.ndarray) -> BatchRead:
    """The chunks VirtualiZarr holds in the manifest itself (a few small ones), on the host."""
    inlined = array.manifest._inlined
    parts = [np.frombuffer(inlined[grid_coords(int(req.flat[r]), array.grid)], np.uint8)
             [int(req.starts[r]): int(req.stops[r])] for r in rows.tolist()]
    sizes = np.array([p.nbytes for p in parts], np.int64)
    data = np.concatenate(parts) if parts else np.empty(0, np.uint8)
    return BatchRead(data, np.cumsum(sizes) - sizes, sizes, np.ones(len(rows), bool), "cpu",
                     int(data.nbytes))


def _merge(parts: list[tuple[np.ndarray, BatchRead]], n: int, device: Device) -> BatchRead:
    """One :class:`BatchRead` of ``n`` requests from the reads of some of them (the others are
    chunks that are not stored: absent). One part keeps its buffer; several are joined."""
    offsets = np.zeros(n, np.int64)
    sizes = np.zeros(n, np.int64)
    present = np.zeros(n, bool)
    datas = [b.data if b.device == device else _to_device(b.data) for _, b in parts]
    shift = np.cumsum([0] + [int(d.size) for d in datas])
    for (rows, b), base in zip(parts, shift.tolist(), strict=False):
        offsets[rows] = np.asarray(b.offsets, np.int64) + base
        sizes[rows] = b.sizes
        present[rows] = b.present
    if len(datas) == 1:
        data = datas[0]
    elif device == "gpu":
        import cupy

        data = cupy.concatenate(datas) if datas else cupy.empty(0, cupy.uint8)
    else:
        data = np.concatenate(datas) if datas else np.empty(0, np.uint8)
    staged = sum(int(b.nbytes_staged or 0) for _, b in parts)
    return BatchRead(data, offsets, sizes, present, device, staged or int(data.nbytes))


def _to_device(data: np.ndarray) -> Any:
    """Host bytes (inlined chunks) joining a device batch."""
    import cupy

    return cupy.asarray(data)
