"""GDSStore: a zarr store for local directories whose batched reads are really batched.

Every read method (``get``, ``get_partial_values``, ``_get_many``, ``get_ranges``, their sync
twins and :meth:`GDSStore.read_batch`) turns its requests into arrays of starts and stops and
makes ONE call to an I/O backend (:mod:`gds_zarr.io`), which groups them by file, coalesces
nearby ranges and reads everything into one buffer. Returned Buffers are views into that
buffer (made read-only on the host, since requests may share bytes), built with the caller's
prototype: a GPU prototype (``zarr.core.buffer.gpu.Buffer``) reads through kvikio into device
memory.

Differences from zarr's LocalStore, on purpose: keys cannot escape the root
(:mod:`gds_zarr.store._keys`); a missing key is None in every read method (LocalStore raises
from ``get_partial_values``); a path that exists but cannot be read (a directory, no
permission, an I/O error) raises :class:`~gds_zarr.errors.ChunkReadError` instead of reading as
missing; ``list_prefix`` matches string prefixes, as the Store ABC documents.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import sys
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from gds_zarr._device import resolve_device
from gds_zarr.errors import ChunkReadError, InvalidKeyError, ReadOnlyError
from gds_zarr.io._base import BatchRead, IOBackend, IOStats
from gds_zarr.io._cpu import (
    STALE_TEMP_AGE,
    PosixIOBackend,
    is_temp_name,
    remove_stale_temp_files,
)
from gds_zarr.planning.index_cache import shard_index_cache
from gds_zarr.store._keys import KeyResolver
from gds_zarr.store._url import is_url

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

__all__ = ["GDSStore"]

Device = Literal["cpu", "gpu"]


def _encode(byte_range: ByteRequest | None) -> tuple[int, int]:
    """One zarr byte request as ``(start, stop)`` in the encoding of :mod:`gds_zarr.io._base`."""
    if byte_range is None:
        return 0, -1
    if isinstance(byte_range, RangeByteRequest):
        if byte_range.start < 0 or byte_range.end < byte_range.start:
            raise ValueError(f"Unexpected byte_range, got {byte_range}: need 0 <= start <= end")
        return byte_range.start, byte_range.end
    if isinstance(byte_range, OffsetByteRequest):
        if byte_range.offset < 0:
            raise ValueError(f"Unexpected byte_range, got {byte_range}: offset must be >= 0")
        return byte_range.offset, -1
    if isinstance(byte_range, SuffixByteRequest):
        if byte_range.suffix < 0:
            raise ValueError(f"Unexpected byte_range, got {byte_range}: suffix must be >= 0")
        return (-byte_range.suffix, -1) if byte_range.suffix else (0, 0)
    raise TypeError(f"Unexpected byte_range, got {byte_range}.")


def _encode_many(byte_ranges: Iterable[ByteRequest | None]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [_encode(r) for r in byte_ranges]
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0].copy(), arr[:, 1].copy()


def _prototype_device(prototype: BufferPrototype) -> Device:
    """``"gpu"`` if the prototype makes zarr GPU Buffers.

    zarr's GPU buffer module imports CuPy, so it is looked up in ``sys.modules`` rather than
    imported: if it was never imported, no prototype can be using it.
    """
    gpu = sys.modules.get("zarr.core.buffer.gpu")
    if gpu is not None and issubclass(prototype.buffer, gpu.Buffer):
        return "gpu"
    return "cpu"


class GDSStore(Store):
    """A zarr store for a local directory with batched reads into host or device memory.

    Parameters
    ----------
    root
        The store's directory (created on open unless ``read_only``), or an object store URL:
        ``s3://``, ``gs://``, ``az://`` or ``http(s)://`` (then the instance is a
        :class:`gds_zarr.store._remote.RemoteGDSStore`, a subclass reading through obstore).
    read_only
        Refuse every write, delete and clear.
    storage_options
        For a URL only: the object store's configuration (see ``gds_zarr/store/_url.py``).

    Examples
    --------
    >>> store = GDSStore("data.zarr")                                 # doctest: +SKIP
    >>> zarr.open_array(store, mode="r")[...]                         # doctest: +SKIP
    >>> GDSStore("s3://bucket/era5.zarr", read_only=True)            # doctest: +SKIP
    """

    supports_writes: bool = True
    supports_deletes: bool = True
    supports_listing: bool = True

    root: Path

    def __new__(cls, root: Any = None, *args: Any, **kwargs: Any) -> Self:
        # One public class: a URL root makes the remote subclass (same API, obstore backend).
        if cls is GDSStore and is_url(root):
            from gds_zarr.store._remote import RemoteGDSStore

            return super().__new__(RemoteGDSStore)  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, root: str | os.PathLike[str], *, read_only: bool = False,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        super().__init__(read_only=read_only)
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"'root' must be a str or os.PathLike, got {type(root).__name__}")
        if storage_options:
            raise ValueError(f"storage_options apply to s3://, gs://, az:// and http(s):// "
                             f"URLs, not to the local path {os.fspath(root)!r}")
        if isinstance(root, str) and root.startswith("file://"):
            root = root[len("file://"):]  # what str(store) gives: GDSStore(str(s)) == s
        self.root = Path(os.fspath(root))
        self._keys = KeyResolver(os.fspath(self.root))
        self._backends: dict[Device, IOBackend] = {}
        self._swept: set[str] = set()  # directories whose stale temp files were removed

    # ------------------------------------------------------------------ identity, pickling

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GDSStore) and self.root == other.root

    __hash__ = None  # type: ignore[assignment]  # mutable open state; LocalStore is unhashable too

    def __str__(self) -> str:
        return f"file://{self.root.as_posix()}"

    def __repr__(self) -> str:
        return f"GDSStore('{self}', read_only={self.read_only})"

    def __getstate__(self) -> dict[str, Any]:
        # Backends hold locks and caches: a new process makes its own.
        return {"root": self.root, "read_only": self._read_only, "is_open": self._is_open}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], read_only=state["read_only"])  # type: ignore[misc]
        self._is_open = state["is_open"]

    def with_read_only(self, read_only: bool = False) -> Self:
        # docstring inherited
        return type(self)(self.root, read_only=read_only)

    # ------------------------------------------------------------------ open, writability

    def _ensure_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            # A file given as the store (an .h5, a zip): "does not exist" would mislead.
            raise NotADirectoryError(f"store root {str(self.root)!r} is a file, not a directory: "
                                     f"a GDSStore is a directory of Zarr keys")
        if not self.read_only:
            self.root.mkdir(parents=True, exist_ok=True)
        if not self.root.is_dir():
            raise FileNotFoundError(f"store root {str(self.root)!r} does not exist")

    async def _open(self) -> None:
        await asyncio.to_thread(self._ensure_root)
        await super()._open()

    async def _ensure_open(self) -> None:
        if not self._is_open:
            await asyncio.to_thread(self._ensure_root)
            self._is_open = True

    def _ensure_open_sync(self) -> None:
        if not self._is_open:
            self._ensure_root()
            self._is_open = True

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError("writing")

    # ------------------------------------------------------------------ backends

    def _backend(self, device: Device) -> IOBackend:
        backend = self._backends.get(device)
        if backend is None:
            if device == "gpu":
                from gds_zarr.io._gpu import KvikioIOBackend

                backend = KvikioIOBackend()
            else:
                backend = PosixIOBackend()
            self._backends[device] = backend
        return backend

    def io_stats(self, device: Device = "cpu") -> IOStats:
        """The counters of this store's I/O backend for ``device`` (tests count reads here)."""
        return self._backend(device).stats

    # ------------------------------------------------------------------ the batched read

    def read_batch(
        self,
        keys: Sequence[str],
        starts: np.ndarray | None = None,
        stops: np.ndarray | None = None,
        *,
        device: str | None = None,
        max_gap: int | None = None,
        max_size: int | None = None,
        size_hint: int | None = None,
    ) -> BatchRead:
        """Read many keys (or byte ranges of them) in one batched backend call. Blocking.

        Parameters
        ----------
        keys
            Store keys, one per request (repeats allowed).
        starts, stops
            int64 arrays of encoded requests (see :class:`gds_zarr.io.IOBackend`); None reads
            whole values.
        device
            ``"cpu"`` or ``"gpu"``; None: the device zarr's default buffer prototype uses.
        max_gap, max_size
            Coalescing bounds; default: the ``coalesce_max_gap`` / ``coalesce_max_size``
            settings.
        size_hint
            Expected size of a whole value (e.g. a chunk's encoded size): lets the CPU backend
            read a batch of distinct keys in one pass. A wrong hint costs time, never bytes.

        Returns
        -------
        BatchRead
            Missing keys have ``present`` False and size 0.

        Raises
        ------
        InvalidKeyError
            A key that is malformed or would escape the root.
        ChunkReadError
            A key that exists but cannot be read; the error names the key.
        DeviceUnavailableError
            ``device="gpu"`` where the GPU path cannot run.
        """
        if device is None:
            dev = _prototype_device(default_buffer_prototype())
        elif device == "cpu":  # always usable: skip resolve_device's explained choice (per read)
            dev = "cpu"
        else:
            dev = resolve_device(device)
        n = len(keys)
        if starts is None:
            starts = np.zeros(n, dtype=np.int64)
        if stops is None:
            stops = np.full(n, -1, dtype=np.int64)
        return self._read(list(keys), starts, stops, dev, max_gap=max_gap, max_size=max_size,
                          size_hint=size_hint)

    def _read(self, keys: list[str], starts: np.ndarray, stops: np.ndarray, device: Device,
              *, max_gap: int | None = None, max_size: int | None = None,
              size_hint: int | None = None) -> BatchRead:
        self._ensure_open_sync()
        paths = self._keys.paths(keys)
        try:
            return self._backend(device).read_batch(
                paths, starts, stops, max_gap=max_gap, max_size=max_size,  # type: ignore[call-arg]
                resolve_link=self._keys.resolve_link, size_hint=size_hint,
            )
        except ChunkReadError as e:
            root = self._keys.root + "/"
            key = e.key[len(root):] if e.key.startswith(root) else e.key
            raise ChunkReadError(key, e.reason) from e

    def _read_buffers(self, prototype: BufferPrototype, keys: list[str], starts: np.ndarray,
                      stops: np.ndarray, **plan: Any) -> list[Buffer | None]:
        """One batched read, answered as one Buffer (a view) or None per request."""
        if not keys:
            return []
        want = _prototype_device(prototype)
        device: Device = want
        if want == "gpu" and resolve_device("auto") != "gpu":
            device = "cpu"  # CuPy works but kvikio cannot: read on the host, upload once below
        batch = self._read(keys, starts, stops, device, **plan)
        data = batch.data
        if want == "gpu" and device == "cpu":
            import cupy as cp

            data = cp.asarray(data)
        elif device == "cpu":
            data.flags.writeable = False  # views share bytes: nobody may write through one
        make = prototype.buffer.from_array_like
        ends = (batch.offsets + batch.sizes).tolist()
        return [make(data[o:e]) if p else None
                for o, e, p in zip(batch.offsets.tolist(), ends, batch.present.tolist(),
                                   strict=True)]

    def _get_one(self, key: str, prototype: BufferPrototype | None,
                 byte_range: ByteRequest | None) -> Buffer | None:
        start, stop = _encode(byte_range)
        proto = default_buffer_prototype() if prototype is None else prototype
        return self._read_buffers(proto, [key], np.array([start], dtype=np.int64),
                                  np.array([stop], dtype=np.int64))[0]

    def _get_partial(self, prototype: BufferPrototype,
                     key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        pairs = list(key_ranges)
        starts, stops = _encode_many(r for _, r in pairs)
        return self._read_buffers(prototype, [k for k, _ in pairs], starts, stops)

    def _get_ranges(self, key: str, byte_ranges: Sequence[ByteRequest | None],
                    prototype: BufferPrototype, max_gap_bytes: int,
                    max_coalesced_bytes: int) -> list[tuple[int, Buffer | None]]:
        starts, stops = _encode_many(byte_ranges)
        try:
            bufs = self._read_buffers(prototype, [key] * len(starts), starts, stops,
                                      max_gap=max_gap_bytes, max_size=max_coalesced_bytes)
        except (InvalidKeyError, ValueError, TypeError):
            raise  # bad arguments are the caller's error, not a failed fetch
        except Exception as e:  # noqa: BLE001 - get_ranges reports every fetch failure this way
            raise ExceptionGroup("chunk read failed", [e]) from None
        if bufs and bufs[0] is None:
            raise ExceptionGroup("chunk read failed", [FileNotFoundError(key)])
        return list(enumerate(bufs))

    # ------------------------------------------------------------------ reads: async + sync

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        # docstring inherited
        _encode(byte_range)  # argument errors raise before the thread hop
        return await asyncio.to_thread(self._get_one, key, prototype, byte_range)

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """Synchronous :meth:`get`."""
        return self._get_one(key, prototype, byte_range)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        """Read many (key, byte range) pairs in ONE batched read; None for a missing key."""
        return await asyncio.to_thread(self._get_partial, prototype, list(key_ranges))

    def get_partial_values_sync(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        """Synchronous :meth:`get_partial_values`."""
        return self._get_partial(prototype, key_ranges)

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        """Read every request in one batched read per buffer prototype, yielding in order."""
        reqs = list(requests)
        by_proto: dict[BufferPrototype, list[int]] = {}
        for i, (_, proto, _) in enumerate(reqs):
            by_proto.setdefault(proto, []).append(i)
        for proto, idx in by_proto.items():
            bufs = await asyncio.to_thread(
                self._get_partial, proto, [(reqs[i][0], reqs[i][2]) for i in idx])
            for i, buf in zip(idx, bufs, strict=True):
                yield reqs[i][0], buf

    async def get_ranges(
        self,
        key: str,
        byte_ranges: Sequence[ByteRequest | None],
        *,
        prototype: BufferPrototype,
        max_concurrency: int = 10,
        max_gap_bytes: int = 1 << 20,
        max_coalesced_bytes: int = 16 << 20,
    ) -> AsyncIterator[Sequence[tuple[int, Buffer | None]]]:
        """Read many byte ranges of one key in ONE batched read (coalesced by the bounds given).

        Yields a single batch of ``(index, Buffer)`` pairs. As the Store ABC documents, a
        missing key or a failed read raises a ``BaseExceptionGroup`` (``FileNotFoundError``
        for a missing key). ``max_concurrency`` is accepted for compatibility; the backend's
        thread pool sets the concurrency.
        """
        if not byte_ranges:
            return
        yield await asyncio.to_thread(self._get_ranges, key, byte_ranges, prototype,
                                      max_gap_bytes, max_coalesced_bytes)

    def get_ranges_sync(
        self,
        key: str,
        byte_ranges: Sequence[ByteRequest | None],
        *,
        prototype: BufferPrototype,
        max_gap_bytes: int = 1 << 20,
        max_coalesced_bytes: int = 16 << 20,
    ) -> Sequence[tuple[int, Buffer | None]]:
        """Synchronous :meth:`get_ranges`: a list of ``(index, Buffer)`` pairs."""
        if not byte_ranges:
            return []
        return self._get_ranges(key, byte_ranges, prototype, max_gap_bytes,
                                max_coalesced_bytes)

    # ------------------------------------------------------------------ metadata reads

    def _stat(self, key: str) -> os.stat_result | None:
        """stat of a key's file, following an in-root final symlink; None if missing."""
        path = self._keys.path(key)
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                st = os.stat(self._keys.resolve_link(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st

    def file_identities(self, keys: Sequence[str]
                        ) -> list[tuple[str, int, int, int, int, int] | None]:
        """``(path, st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)`` of each key's file,
        None if missing.

        What the shard-index cache keys on: a file rewritten by anyone (atomically, as
        ``set`` does, or in place) gets a new identity, so a cached index never outlives it.
        ``st_ctime_ns`` is there because ``utime`` cannot set it back: ``rsync --inplace -t``,
        ``cp -p`` and tar restore the mtime of a file they rewrote in place. What no key can
        see: two writes within one tick of the kernel's file clock (a few ms on Linux without
        fine-grained timestamps), with a read between them, at the same size.
        One ``stat`` per key, far cheaper than reading an index.
        """
        self._ensure_open_sync()
        out: list[tuple[str, int, int, int, int, int] | None] = []
        for path in self._keys.paths(list(keys)):
            try:
                st = os.stat(path)  # follows links; resolved paths stay inside the root
            except (FileNotFoundError, NotADirectoryError):
                out.append(None)
                continue
            if not stat.S_ISREG(st.st_mode):
                out.append(None)  # the read itself reports what is wrong with it
                continue
            out.append((path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                        st.st_ctime_ns))
        return out

    def _exists(self, key: str) -> bool:
        st = self._stat(key)
        return st is not None and stat.S_ISREG(st.st_mode)

    async def exists(self, key: str) -> bool:
        # docstring inherited
        return await asyncio.to_thread(self._exists, key)

    def _getsize(self, key: str) -> int:
        st = self._stat(key)
        if st is None or not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(key)
        return st.st_size

    async def getsize(self, key: str) -> int:
        # docstring inherited
        return await asyncio.to_thread(self._getsize, key)

    async def getsize_prefix(self, prefix: str) -> int:
        # docstring inherited
        if prefix != "" and not prefix.endswith("/"):
            prefix += "/"
        return await asyncio.to_thread(
            lambda: sum(size for _, size in self._walk(prefix, with_sizes=True)))

    # ------------------------------------------------------------------ writes

    def _set(self, key: str, value: Buffer, exclusive: bool = False) -> None:
        self._check_writable()
        if not isinstance(value, Buffer):
            raise TypeError(f"GDSStore.set(): `value` must be a Buffer instance. Got an "
                            f"instance of {type(value)} instead.")
        self._ensure_open_sync()
        path = self._keys.path(key)
        self._sweep(os.path.dirname(path))
        shard_index_cache.drop_path(path)  # the file is replaced: its cached index is garbage
        array = value.as_array_like()
        if hasattr(array, "__cuda_array_interface__") and not hasattr(array, "__array_interface__"):
            if resolve_device("auto") == "gpu":
                self._backend("gpu").write_file(path, array, exclusive=exclusive)  # type: ignore[call-arg]
                return
            array = value.as_numpy_array()
        self._backend("cpu").write_file(path, array, exclusive=exclusive)  # type: ignore[call-arg]

    def _sweep(self, directory: str) -> None:
        """Once per directory and store: remove the temporary files that killed writers left
        there (one ``scandir``; see :func:`gds_zarr.io._cpu.stale_temp_files`)."""
        if directory not in self._swept:
            self._swept.add(directory)
            remove_stale_temp_files(directory)

    def remove_partial_files(self, max_age: float = STALE_TEMP_AGE) -> int:
        """Remove every temporary file of an unfinished write that no live writer can own.

        Writes go to a hidden ``.<name>.<tag>.partial`` file renamed into place; a writer
        killed before the rename (``kill -9``, a crash, a power cut) leaves it behind. Each
        write already removes those in its own directory, once per store; this walks the
        whole store. A file is removed when it was written on this host by a process that no
        longer exists, or when it has not been modified for ``max_age`` seconds (a writer on
        another host, or a PID reused since). Listings never show these files.

        Returns
        -------
        int
            How many files were removed.
        """
        self._check_writable()
        self._ensure_open_sync()
        removed = 0
        for directory, _, _ in os.walk(self._keys.root):
            removed += remove_stale_temp_files(directory, max_age)
        return removed

    async def set(self, key: str, value: Buffer) -> None:
        """Store ``value`` at ``key`` atomically (temporary file, then rename)."""
        self._check_writable()
        await asyncio.to_thread(self._set, key, value)

    def set_sync(self, key: str, value: Buffer) -> None:
        """Synchronous :meth:`set`."""
        self._set(key, value)

    def _set_if_not_exists(self, key: str, value: Buffer) -> None:
        try:
            self._set(key, value, exclusive=True)
        except FileExistsError:
            pass

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        """Store ``value`` at ``key`` unless it exists; safe against concurrent writers."""
        self._check_writable()
        await asyncio.to_thread(self._set_if_not_exists, key, value)

    def _delete(self, key: str) -> None:
        self._check_writable()
        path = self._keys.path(key)
        shard_index_cache.drop_path(path)
        shard_index_cache.drop_prefix(path + "/")
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)  # as LocalStore: a key naming a directory deletes it
        else:
            try:
                os.unlink(path)  # a symlink is removed itself, never its target
            except FileNotFoundError:
                pass

    async def delete(self, key: str) -> None:
        # docstring inherited
        self._check_writable()
        await asyncio.to_thread(self._delete, key)

    def delete_sync(self, key: str) -> None:
        """Synchronous :meth:`delete`."""
        self._delete(key)

    def _delete_dir(self, prefix: str) -> None:
        self._check_writable()
        rel, path = self._keys.prefix_path(prefix)
        if not rel:
            self._clear()
            return
        shard_index_cache.drop_prefix(path.rstrip("/") + "/")
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            raise ValueError(f"delete_dir was passed a prefix={prefix!r} that is not a directory")

    async def delete_dir(self, prefix: str) -> None:
        # docstring inherited
        self._check_writable()
        await asyncio.to_thread(self._delete_dir, prefix)

    def _clear(self) -> None:
        self._check_writable()
        shard_index_cache.drop_prefix(self._keys.root + "/")
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)

    async def clear(self) -> None:
        """Remove every key; the root directory itself stays."""
        self._check_writable()
        await asyncio.to_thread(self._clear)

    # ------------------------------------------------------------------ listing

    def _walk(self, prefix: str, *, with_sizes: bool = False) -> list[tuple[str, int]]:
        """Every key starting with ``prefix`` (a string prefix), with sizes if asked.

        Symlinked directories are not descended into (as LocalStore); symlinked files are
        listed only if they resolve inside the root. Temporary files of unfinished writes are
        skipped.
        """
        rel, _ = self._keys.prefix_path(prefix)
        if prefix.endswith("/") or not rel:
            start_rel, name_filter = rel, ""
        else:
            start_rel, _, name_filter = rel.rpartition("/")
            if start_rel:
                self._keys.prefix_path(start_rel)
        out: list[tuple[str, int]] = []
        stack = [(start_rel, name_filter)]
        while stack:
            rel_dir, only = stack.pop()
            base = f"{self._keys.root}/{rel_dir}" if rel_dir else self._keys.root
            try:
                entries = list(os.scandir(base))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                name = entry.name
                if only and not name.startswith(only):
                    continue
                key = f"{rel_dir}/{name}" if rel_dir else name
                if entry.is_symlink():
                    if not self._keys.inside(entry.path) or not entry.is_file():
                        continue
                elif entry.is_dir(follow_symlinks=False):
                    stack.append((key, ""))
                    continue
                elif not entry.is_file(follow_symlinks=False) or is_temp_name(name):
                    continue
                out.append((key, entry.stat().st_size if with_sizes else 0))
        return out

    def _list_dir(self, prefix: str) -> list[str]:
        _, path = self._keys.prefix_path(prefix)
        try:
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [e.name for e in entries
                if not is_temp_name(e.name)
                and (not e.is_symlink() or self._keys.inside(e.path))]

    async def list(self) -> AsyncIterator[str]:
        # docstring inherited
        for key, _ in await asyncio.to_thread(self._walk, ""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        for key, _ in await asyncio.to_thread(self._walk, prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        for name in await asyncio.to_thread(self._list_dir, prefix):
            yield name

    async def is_empty(self, prefix: str) -> bool:
        # docstring inherited
        if prefix != "" and not prefix.endswith("/"):
            prefix += "/"
        return not await asyncio.to_thread(self._walk, prefix)

    def close(self) -> None:
        # docstring inherited
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()
        super().close()
