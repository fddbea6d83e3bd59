"""What ``GDSStore("s3://...")`` is: the store over an object store URL (S3, GCS, Azure, HTTP).

``GDSStore(root)`` returns an instance of :class:`RemoteGDSStore`, a subclass, when ``root`` is a
URL (:mod:`gds_zarr.store._url`), so there is one public class and every guarantee of the local
store holds: keys are checked the same way (:func:`gds_zarr.store._keys.check_key`), a missing
key is None in every read method, read-only stores refuse writes, and ``read_batch`` returns a
:class:`~gds_zarr.io.BatchRead` with every body in one buffer. Only the helpers that touch bytes
differ; they pick the I/O backend by (where the bytes are, where they go):

=================  ==================  =====================================================
bytes              destination         backend
=================  ==================  =====================================================
local directory    host / device       PosixIOBackend / KvikioIOBackend (GDSStore itself)
object store       host                ObstoreIOBackend (gds_zarr/io/_remote.py)
S3, HTTP           device              kvikio RemoteFile (gds_zarr/io/_remote_gpu.py)
GCS, Azure         device              ObstoreIOBackend + one host-to-device copy per batch
=================  ==================  =====================================================

Differences from the local store, by the nature of object stores: ``delete`` of a key removes
that one object (a "directory" is only a prefix: use ``delete_dir``); an ``http(s)://`` store is
read-only and cannot list (plain HTTP has neither); ``file_identities`` is None for every key
(an object's identity costs a HEAD, as much as reading a shard index, so nothing is cached).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
from zarr.abc.store import Store
from zarr.core.buffer import Buffer

from gds_zarr._batch import BatchRead
from gds_zarr.errors import ChunkReadError
from gds_zarr.io._base import IOBackend
from gds_zarr.io._cpu import STALE_TEMP_AGE
from gds_zarr.store._keys import check_key, check_prefix
from gds_zarr.store._store import Device, GDSStore
from gds_zarr.store._url import RemoteLocation, parse_url

__all__ = ["RemoteGDSStore"]


class RemoteGDSStore(GDSStore):
    """A :class:`GDSStore` whose root is an object store URL (see the module docstring).

    Not constructed directly: ``GDSStore(url, read_only=..., storage_options=...)`` returns
    one.

    Parameters
    ----------
    root
        ``s3://bucket/prefix``, ``gs://...``, ``az://container/prefix`` or ``http(s)://...``.
    read_only
        Refuse every write, delete and clear (always so for ``http(s)://``).
    storage_options
        obstore configuration for the store (``endpoint``, ``region``, ``access_key_id``, ...,
        plus ``anon``, ``client_options``, ``retry_config``); the environment fills the rest.
    """

    root: str  # type: ignore[assignment]  # the URL: a Path would fold "s3://" into "s3:/"
    location: RemoteLocation

    def __init__(self, root: str, *, read_only: bool = False,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        location = parse_url(root, storage_options)
        Store.__init__(self, read_only=read_only or location.kind == "http")
        self.location = location
        self.root = location.url
        self._storage_options = dict(storage_options or {})
        self._redact = location.redactor()
        self._client: Any = None
        self._backends: dict[Device, IOBackend] = {}
        if location.kind == "http":
            # Instance attributes: zarr reads them from the store, and plain HTTP has neither.
            self.supports_writes = self.supports_deletes = self.supports_listing = False
        self.client  # noqa: B018 - a missing obstore is an ImportError now, not at first read

    # ------------------------------------------------------------------ identity, pickling

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, RemoteGDSStore) and self.root == other.root
                and self._storage_options == other._storage_options)

    def __str__(self) -> str:
        return self.root

    def __getstate__(self) -> dict[str, Any]:
        # The options travel (a dask worker needs the credentials); clients are rebuilt there.
        return {"root": self.root, "read_only": self._read_only, "is_open": self._is_open,
                "storage_options": self._storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], read_only=state["read_only"],  # type: ignore[misc]
                      storage_options=state["storage_options"])
        self._is_open = state["is_open"]

    def with_read_only(self, read_only: bool = False) -> Self:
        # docstring inherited
        return type(self)(self.root, read_only=read_only,
                          storage_options=self._storage_options)

    def _ensure_root(self) -> None:
        """Nothing to create: a bucket exists or not, and a prefix is only part of a name."""

    # ------------------------------------------------------------------ backends

    @property
    def client(self) -> Any:
        """The obstore store (built on first use, reading the environment then)."""
        if self._client is None:
            self._client = self.location.build()
        return self._client

    def _backend(self, device: Device) -> IOBackend:
        backend = self._backends.get(device)
        if backend is None:
            from gds_zarr.io._remote import ObstoreIOBackend

            cpu = self._backends.get("cpu")
            if cpu is None:
                cpu = ObstoreIOBackend(self.client, self.location.object_url, self._redact)
                self._backends["cpu"] = cpu  # type: ignore[assignment]
            if device == "gpu":
                from gds_zarr.io._remote_gpu import remote_gpu_backend

                backend = remote_gpu_backend(self.location, cpu)  # type: ignore[arg-type]
                self._backends["gpu"] = backend
            else:
                backend = cpu  # type: ignore[assignment]
        return backend  # type: ignore[return-value]

    def gpu_read_path(self) -> tuple[str, str]:
        """``(backend, reason)``: how a read into device memory reaches this store's bytes."""
        from gds_zarr.io._remote_gpu import remote_gpu_choice

        return remote_gpu_choice(self.location)

    # ------------------------------------------------------------------ the batched read

    def _read(self, keys: list[str], starts: np.ndarray, stops: np.ndarray, device: Device,
              *, max_gap: int | None = None, max_size: int | None = None,
              size_hint: int | None = None) -> BatchRead:
        path = self.location.path
        paths = [path(check_key(k)) for k in keys]
        try:
            return self._backend(device).read_batch(
                paths, starts, stops, max_gap=max_gap, max_size=max_size,  # type: ignore[call-arg]
                size_hint=size_hint)
        except ChunkReadError as e:
            key = self.location.key(e.key) if e.key.startswith(self.location.prefix) else e.key
            raise ChunkReadError(key, e.reason) from None

    # ------------------------------------------------------------------ metadata reads

    def _head(self, key: str) -> dict[str, Any] | None:
        """The object's metadata, None if it does not exist."""
        import obstore as obs

        path = self.location.path(check_key(key))
        try:
            return obs.head(self.client, path)  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001 - a ChunkReadError naming key and URL instead
            raise self._error(key, path, e) from None

    def _error(self, key: str, path: str, e: BaseException) -> ChunkReadError:
        from gds_zarr.io._remote import describe_error

        return ChunkReadError(key, f"{describe_error(e, self._redact)} "
                                   f"({self.location.object_url(path)})")

    def _exists(self, key: str) -> bool:
        return self._head(key) is not None

    def _getsize(self, key: str) -> int:
        meta = self._head(key)
        if meta is None:
            raise FileNotFoundError(key)
        return int(meta["size"])

    def file_identities(self, keys: Sequence[str]
                        ) -> list[tuple[str, int, int, int, int, int] | None]:
        """None for every key: shard indexes of remote stores are not cached (module
        docstring)."""
        return [None] * len(keys)

    # ------------------------------------------------------------------ writes

    def remove_partial_files(self, max_age: float = STALE_TEMP_AGE) -> int:
        """Nothing to remove: an object store writes each object whole, so a killed writer
        leaves no temporary object behind (see :meth:`GDSStore.remove_partial_files`)."""
        self._check_writable()
        return 0

    def _set(self, key: str, value: Buffer, exclusive: bool = False) -> None:
        self._check_writable()
        if not isinstance(value, Buffer):
            raise TypeError(f"GDSStore.set(): `value` must be a Buffer instance. Got an "
                            f"instance of {type(value)} instead.")
        path = self.location.path(check_key(key))
        self._forget_tails(path)
        self._backend("cpu").write_file(path, value.as_numpy_array(),  # type: ignore[call-arg]
                                        exclusive=exclusive)

    def _forget_tails(self, path: str | None) -> None:
        """Drop prefetched tails (gds_zarr/io/_remote.py) of an object written or deleted here;
        None: of every object."""
        cpu = self._backends.get("cpu")
        if cpu is not None:
            cpu.tails.drop(path)  # type: ignore[attr-defined]

    def _delete_paths(self, paths: list[str]) -> None:
        import obstore as obs

        for p in paths:
            self._forget_tails(p)
        for i in range(0, len(paths), 1000):  # S3's bulk delete takes 1000 keys a request
            try:
                obs.delete(self.client, paths[i:i + 1000])
            except FileNotFoundError:
                pass
            except Exception as e:  # noqa: BLE001 - an OSError naming the prefix and URL
                raise OSError(f"could not delete under {self.root!r}: "
                              f"{self._error('', paths[i], e).reason}") from None

    def _delete(self, key: str) -> None:
        self._check_writable()
        self._delete_paths([self.location.path(check_key(key))])

    def _delete_dir(self, prefix: str) -> None:
        self._check_writable()
        rel = check_prefix(prefix)
        if not rel:
            self._clear()
            return
        self._delete_paths([self.location.path(k) for k, _ in self._walk(rel + "/")])

    def _clear(self) -> None:
        self._check_writable()
        self._delete_paths([self.location.path(k) for k, _ in self._walk("")])

    # ------------------------------------------------------------------ listing

    def _no_listing(self) -> None:
        if not self.supports_listing:
            raise NotImplementedError(f"{self.root!r}: an HTTP store cannot list its keys "
                                      f"(plain HTTP has no listing); open arrays by path")

    def _walk(self, prefix: str, *, with_sizes: bool = False) -> list[tuple[str, int]]:
        """Every key starting with ``prefix`` (a string prefix, as the Store ABC says), with
        sizes. obstore lists whole path segments, so a prefix ending inside a name lists its
        parent and filters."""
        import obstore as obs

        self._no_listing()
        rel = check_prefix(prefix)
        whole_dir = prefix.endswith("/") or not rel
        folder = rel if whole_dir else rel.rpartition("/")[0]
        start = self.location.path(folder) if folder else self.location.prefix
        want = rel + "/" if whole_dir and rel else rel
        key = self.location.key
        try:
            pages = obs.list(self.client, prefix=start or None).collect()
        except Exception as e:  # noqa: BLE001 - a ChunkReadError naming the prefix and URL
            raise self._error(prefix, start, e) from None
        return [(k, int(m["size"])) for m in pages
                if (k := key(m["path"])).startswith(want)]

    def _list_dir(self, prefix: str) -> list[str]:
        import obstore as obs

        self._no_listing()
        rel = check_prefix(prefix)
        start = self.location.path(rel) if rel else self.location.prefix
        try:
            found = obs.list_with_delimiter(self.client, prefix=start or None)
        except Exception as e:  # noqa: BLE001 - a ChunkReadError naming the prefix and URL
            raise self._error(prefix, start, e) from None
        names = [m["path"].rsplit("/", 1)[-1] for m in found["objects"]]
        return names + [p.rstrip("/").rsplit("/", 1)[-1] for p in found["common_prefixes"]]
