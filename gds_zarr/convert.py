"""Rewrite any Zarr array or group into a layout that decodes fast on a GPU.

``convert(src, dst)`` reads a Zarr v2 or v3 array or group (any codec zarr-python reads) and
writes a Zarr v3 copy that is

* **sharded**: few, large files (shards) of many small inner chunks, so that one batched read
  and one batched GPU decode cover thousands of chunks;
* compressed with an **nvCOMP-decodable codec**: ``zstd`` (default), ``lz4`` (numcodecs LZ4 via
  ``zarr.codecs.numcodecs.LZ4``, stored as ``numcodecs.lz4``) or ``gzip``;
  (Blosc is not an output codec here, but no longer a reason to convert: gds_zarr decodes
  Blosc with LZ4 or Zstd inside on the GPU too, frames parsed on the host, blocks by nvCOMP,
  the shuffle undone by a kernel; BloscLZ or Zlib inside stays on the CPU. That GPU path has
  not run on a GPU yet. Converting Blosc data still gains the sharded layout.)
* **equal** to the input: every block is read back and compared bit for bit (NaN payloads
  included) before it counts as done.

Default layout (when ``chunk_shape``/``shard_shape`` are not given), per array:

* inner chunk: start from the array shape rounded up to powers of two and halve the longest
  axis until the chunk holds at most 256 KiB decoded, so chunks land in 128-256 KiB (large
  enough for nvCOMP's batched decode to be efficient, small enough for partial reads);
* shard: start from the inner chunk and double the shortest axis (that does not yet cover the
  array) while the shard stays at most 128 MiB decoded, so shards land in 64-128 MiB, then trim
  each axis to the array (a multiple of the chunk).

Memory stays bounded: the destination is written one shard at a time (the source read for that
shard, the encoded shard and the read-back copy for verification: about three shards, plus
whatever the source's own chunks need to decode that region).

Safe to rerun, and resumable: while a conversion runs, DST holds a marker key
``.gds_zarr_convert.json`` listing the parameters and the shards already written **and
verified**. Rerunning the same conversion after an interruption skips those shards and finishes
the rest; the marker is removed only when every array is complete. A DST that holds Zarr data
without a marker (a finished conversion, or anything else) is never touched unless
``overwrite=True``.
"""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import numpy as np

__all__ = ["MARKER_KEY", "ConvertSummary", "choose_layout", "convert"]

Codec = Literal["zstd", "lz4", "gzip"]

#: Key (at DST's root) of the in-progress marker; present only while a conversion is unfinished.
MARKER_KEY = ".gds_zarr_convert.json"

_MARKER_VERSION = 1
_CHUNK_MAX_BYTES = 256 << 10
_SHARD_MAX_BYTES = 128 << 20
# Variable-length elements (strings, objects) have no fixed size: assume this many bytes each.
_VARIABLE_ITEMSIZE = 16
# Rewrite the marker at most this often (seconds) within one array; shards finished but not yet
# recorded are simply rewritten on resume.
_CHECKPOINT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class ConvertSummary:
    """What :func:`convert` did.

    Attributes
    ----------
    arrays : tuple of str
        Paths (inside SRC/DST) of the arrays converted; ``""`` for a root array.
    groups : int
        Number of groups written (the root group included).
    nbytes : int
        Decoded size of all arrays.
    bytes_in, bytes_out : int
        Bytes stored by the source and destination arrays (chunks plus metadata).
    seconds : float
        Wall time of this call.
    shards_written, shards_skipped : int
        Shards written and verified by this call, and shards skipped because an earlier,
        interrupted run had already written and verified them.
    """

    arrays: tuple[str, ...]
    groups: int
    nbytes: int
    bytes_in: int
    bytes_out: int
    seconds: float
    shards_written: int
    shards_skipped: int

    @property
    def ratio(self) -> float:
        """``bytes_in / bytes_out``: above 1 when the output is smaller than the input."""
        return self.bytes_in / self.bytes_out if self.bytes_out else math.inf

    def __str__(self) -> str:
        speed = self.nbytes / self.seconds / 2**20 if self.seconds > 0 else math.inf
        return (
            f"converted {len(self.arrays)} array(s), {self.groups} group(s): "
            f"{_human(self.nbytes)} decoded, {_human(self.bytes_in)} in -> "
            f"{_human(self.bytes_out)} out (ratio {self.ratio:.2f}), "
            f"{self.shards_written} shard(s) written, {self.shards_skipped} resumed, "
            f"{self.seconds:.2f} s ({speed:.1f} MiB/s), output verified equal to input"
        )


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# Layout


def _itemsize(dtype: np.dtype[Any]) -> int:
    return int(dtype.itemsize) if dtype.kind not in "OT" and dtype.itemsize > 0 else (
        _VARIABLE_ITEMSIZE
    )


def _default_chunks(shape: tuple[int, ...], itemsize: int, max_bytes: int) -> list[int]:
    chunk = [1 << max(0, (s - 1).bit_length()) for s in shape]  # next power of two
    while math.prod(chunk) * itemsize > max_bytes and max(chunk) > 1:
        axis = chunk.index(max(chunk))  # ties: the first (slowest-varying) axis
        chunk[axis] //= 2
    return [max(1, min(c, s)) for c, s in zip(chunk, shape, strict=True)]


def _default_shards(shape: tuple[int, ...], chunk: Sequence[int], itemsize: int,
                    max_bytes: int) -> list[int]:
    cover = [max(c, -(-s // c) * c) for s, c in zip(shape, chunk, strict=True)]
    shard = list(chunk)
    while True:
        growable = [i for i in range(len(shard)) if shard[i] < cover[i]]
        if not growable or math.prod(shard) * itemsize * 2 > max_bytes:
            break
        axis = min(growable, key=lambda i: shard[i])
        shard[axis] = min(shard[axis] * 2, cover[axis])
    return shard


def _largest_divisor_at_most(n: int, limit: int) -> int:
    for d in range(min(n, max(1, limit)), 0, -1):
        if n % d == 0:
            return d
    return 1  # pragma: no cover - d == 1 always divides


def choose_layout(
    shape: Sequence[int],
    dtype: Any,
    *,
    chunk_shape: Sequence[int] | None = None,
    shard_shape: Sequence[int] | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Choose the inner chunk shape and the shard shape of one destination array.

    A ``chunk_shape`` or ``shard_shape`` whose length differs from the array's number of
    dimensions is ignored for that array (so one pair of shapes can serve the N-d data
    variables of a dataset while its 1-d coordinates get the default layout).

    Parameters
    ----------
    shape : sequence of int
        The array shape.
    dtype : numpy dtype or dtype-like
        The array's element type (variable-length types count as 16 bytes per element).
    chunk_shape, shard_shape : sequence of int, optional
        Requested shapes; default: the rule in this module's docstring. Both are clipped to
        the array; the shard is then trimmed to a whole number of chunks covering the array.

    Returns
    -------
    (chunks, shards) : tuple of tuple of int
        ``shards`` is a multiple of ``chunks`` on every axis.

    Raises
    ------
    ValueError
        If a requested shape has a non-positive entry, or the shard is not a multiple of the
        chunk on some axis.
    """
    shape_t = tuple(int(s) for s in shape)
    ndim = len(shape_t)
    itemsize = _itemsize(np.dtype(dtype))
    chunk_req = tuple(chunk_shape) if chunk_shape is not None and len(chunk_shape) == ndim else None
    shard_req = tuple(shard_shape) if shard_shape is not None and len(shard_shape) == ndim else None
    for name, req in (("chunk_shape", chunk_req), ("shard_shape", shard_req)):
        if req is not None and any(int(v) < 1 for v in req):
            raise ValueError(f"{name} entries must be >= 1, got {req}")
    if ndim == 0:
        return (), ()
    if chunk_req is not None:
        chunks = [max(1, min(int(c), s)) for c, s in zip(chunk_req, shape_t, strict=True)]
    else:
        chunks = _default_chunks(shape_t, itemsize, _CHUNK_MAX_BYTES)
        if shard_req is not None:
            # Inner chunks must tile the requested shard exactly.
            chunks = [_largest_divisor_at_most(int(sh), c) if int(sh) < s else c
                      for sh, c, s in zip(shard_req, chunks, shape_t, strict=True)]
    if shard_req is not None:
        shards = [min(int(sh), max(c, -(-s // c) * c))
                  for sh, c, s in zip(shard_req, chunks, shape_t, strict=True)]
        bad = [i for i, (sh, c) in enumerate(zip(shards, chunks, strict=True)) if sh % c]
        if bad:
            raise ValueError(
                f"shard shape {tuple(shards)} is not a multiple of chunk shape {tuple(chunks)} "
                f"on axis {bad[0]} (array shape {shape_t})"
            )
    else:
        shards = _default_shards(shape_t, chunks, itemsize, _SHARD_MAX_BYTES)
    return tuple(chunks), tuple(shards)


def _make_codec(codec: str, level: int | None) -> Any:
    import zarr.codecs

    if codec == "zstd":
        return zarr.codecs.ZstdCodec(level=3 if level is None else level)
    if codec == "gzip":
        return zarr.codecs.GzipCodec(level=5 if level is None else level)
    if codec == "lz4":
        # zarr has no LZ4 codec of its own; numcodecs' LZ4 (4-byte size prefix + one LZ4 block)
        # is what nvCOMP's LZ4 decodes after stripping the prefix.
        from zarr.codecs.numcodecs import LZ4

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "not part of the Zarr v3 specification"
            return LZ4(acceleration=1 if level is None else level)
    raise ValueError(f"codec must be 'zstd', 'lz4' or 'gzip', got {codec!r}")


# ---------------------------------------------------------------------------------------------
# Stores and the marker


def _as_store(obj: Any, *, read_only: bool) -> Any:
    from zarr.abc.store import Store

    from gds_zarr.store import GDSStore

    if isinstance(obj, Store):
        return obj
    if isinstance(obj, str | os.PathLike):
        # GDSStore: batched reads of the source, and every file written atomically (temporary
        # name, then rename), so an interrupted run never leaves a torn shard behind.
        return GDSStore(os.fspath(obj), read_only=read_only)
    raise TypeError(f"expected a path or a zarr Store, got {type(obj).__name__}")


def _sync(coro: Any) -> Any:
    from zarr.core.sync import sync

    return sync(coro)


def _read_marker(store: Any) -> dict[str, Any] | None:
    from zarr.core.buffer import default_buffer_prototype

    buf = _sync(store.get(MARKER_KEY, default_buffer_prototype()))
    if buf is None:
        return None
    marker: dict[str, Any] = json.loads(buf.to_bytes())
    return marker


def _write_marker(store: Any, marker: dict[str, Any]) -> None:
    from zarr.core.buffer import default_buffer_prototype

    data = json.dumps(marker, sort_keys=True).encode()
    _sync(store.set(MARKER_KEY, default_buffer_prototype().buffer.from_bytes(data)))


def _local_root(store: Any) -> str | None:
    root = getattr(store, "root", None)
    if isinstance(root, str) and "://" in root:
        return root  # a remote store's URL: no local path to resolve
    return os.path.realpath(os.fspath(root)) if root is not None else None


# ---------------------------------------------------------------------------------------------
# Metadata translation


def _encode_fill_for_xarray(value: Any, dtype: np.dtype[Any]) -> Any:
    """Encode a v2 fill value as xarray's ``_FillValue`` attribute of a Zarr v3 array.

    xarray reads a v2 array's ``fill_value`` as its missing-value marker but, for v3, uses the
    ``_FillValue`` attribute (encoded like this: xarray.backends.zarr.FillValueCoder). Carrying
    it over keeps ``xr.open_zarr`` results identical after conversion.
    """
    if dtype.kind == "S":
        return base64.standard_b64encode(bytes(value)).decode()
    if dtype.kind == "b":
        return bool(value)
    if dtype.kind in "iu":
        return int(value)
    if dtype.kind == "f":
        return base64.standard_b64encode(struct.pack("<d", float(value))).decode()
    if dtype.kind == "c":
        return [base64.standard_b64encode(struct.pack("<d", float(v))).decode()
                for v in (complex(value).real, complex(value).imag)]
    return None


def _translate(src: Any) -> tuple[dict[str, Any], tuple[str, ...] | None]:
    """Attributes and dimension names of the v3 copy of array ``src``."""
    attrs = dict(src.attrs)
    if src.metadata.zarr_format == 3:
        names = src.metadata.dimension_names
        return attrs, tuple(names) if names is not None else None
    dims = attrs.get("_ARRAY_DIMENSIONS")
    if not (isinstance(dims, list) and len(dims) == src.ndim
            and all(isinstance(d, str) for d in dims)):
        return attrs, None
    # xarray's v2 convention -> v3 metadata, as xarray itself writes v3.
    del attrs["_ARRAY_DIMENSIONS"]
    if src.fill_value is not None and "_FillValue" not in attrs:
        encoded = _encode_fill_for_xarray(src.fill_value, np.dtype(src.dtype))
        if encoded is not None:
            attrs["_FillValue"] = encoded
    return attrs, tuple(dims)


# ---------------------------------------------------------------------------------------------
# Verification


def _bitwise_equal(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    """True if ``a`` and ``b`` hold the same values bit for bit (NaN payloads included)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "OT" or a.dtype.itemsize == 0:
        return bool(np.array_equal(a, b))
    return bool(np.array_equal(np.ascontiguousarray(a).reshape(-1).view(np.uint8),
                               np.ascontiguousarray(b).reshape(-1).view(np.uint8)))


# ---------------------------------------------------------------------------------------------
# Conversion


@dataclass(slots=True)
class _Job:
    """One array to convert."""

    path: str
    src: Any
    chunks: tuple[int, ...]
    shards: tuple[int, ...]
    attrs: dict[str, Any]
    dimension_names: tuple[str, ...] | None
    done: set[int] = field(default_factory=set)

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(-(-s // b) for s, b in zip(self.src.shape, self.shards, strict=True))

    def blocks(self) -> Iterator[tuple[int, tuple[slice, ...]]]:
        """(linear index, selection) of every shard, in C order."""
        for linear, idx in enumerate(np.ndindex(*self.grid)):
            yield linear, tuple(slice(i * b, min((i + 1) * b, s))
                                for i, b, s in zip(idx, self.shards, self.src.shape, strict=True))


def _collect(src_root: Any, chunk_shape: Sequence[int] | None,
             shard_shape: Sequence[int] | None) -> tuple[list[_Job], list[tuple[str, Any]]]:
    import zarr

    def job(path: str, arr: Any) -> _Job:
        chunks, shards = choose_layout(arr.shape, arr.dtype, chunk_shape=chunk_shape,
                                       shard_shape=shard_shape)
        attrs, dims = _translate(arr)
        return _Job(path, arr, chunks, shards, attrs, dims)

    if isinstance(src_root, zarr.Array):
        return [job("", src_root)], []
    jobs: list[_Job] = []
    groups: list[tuple[str, Any]] = [("", src_root)]
    # Sorted so that parents come before children and reruns visit arrays in the same order.
    for path, member in sorted(src_root.members(max_depth=None), key=lambda m: m[0]):
        if isinstance(member, zarr.Array):
            jobs.append(job(path, member))
        else:
            groups.append((path, member))
    return jobs, groups


def _params(jobs: list[_Job], codec: str, level: int | None) -> dict[str, Any]:
    return {
        "codec": codec,
        "level": level,
        "arrays": {j.path: {"shape": list(j.src.shape), "dtype": str(j.src.dtype),
                            "chunks": list(j.chunks), "shards": list(j.shards)} for j in jobs},
    }


def _open_or_create(dst_store: Any, job: _Job, compressor: Any) -> Any:
    import zarr

    meta_key = f"{job.path}/zarr.json" if job.path else "zarr.json"
    if _sync(dst_store.exists(meta_key)):  # resuming: created by the interrupted run
        return zarr.open_array(dst_store, path=job.path, mode="r+", zarr_format=3)
    fill = job.src.fill_value
    kwargs: dict[str, Any] = {} if fill is None else {"fill_value": fill}
    return zarr.create_array(
        dst_store,
        name=job.path or None,
        shape=job.src.shape,
        dtype=job.src.dtype,
        chunks=job.chunks if job.src.ndim else "auto",
        shards=job.shards if job.src.ndim else None,
        filters=(),
        compressors=(compressor,),
        serializer="auto",
        attributes=job.attrs,
        dimension_names=job.dimension_names,
        zarr_format=3,
        overwrite=False,
        **kwargs,
    )


def convert(
    src: Any,
    dst: Any,
    *,
    shard_shape: Sequence[int] | None = None,
    chunk_shape: Sequence[int] | None = None,
    codec: Codec = "zstd",
    level: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> ConvertSummary:
    """Rewrite the Zarr array or group at ``src`` as a sharded Zarr v3 copy at ``dst``.

    Groups are copied recursively with their attributes; arrays keep their shape, dtype, fill
    value, attributes and dimension names (xarray's v2 ``_ARRAY_DIMENSIONS`` and fill-value
    conventions become their v3 equivalents, so ``xr.open_zarr`` sees the same dataset). If the
    source group had consolidated metadata, so does the copy.

    Parameters
    ----------
    src : str, os.PathLike or zarr.abc.store.Store
        Where the input hierarchy is (Zarr v2 or v3, any codec zarr-python reads). A path or
        an ``s3://``, ``gs://``, ``az://`` or ``http(s)://`` URL is opened as a read-only
        :class:`~gds_zarr.GDSStore` (for a URL, configured from the environment).
    dst : str, os.PathLike or zarr.abc.store.Store
        Where the copy goes (a path: a :class:`~gds_zarr.GDSStore`). Must be empty, or hold an
        unfinished conversion of the same source with the same parameters (it is then resumed),
        unless ``overwrite``.
    shard_shape, chunk_shape : sequence of int, optional
        Shard and inner-chunk shapes, applied to arrays with as many dimensions (others, e.g.
        1-d coordinates, get the default layout; see :func:`choose_layout`).
    codec : {"zstd", "lz4", "gzip"}
        Compressor of the inner chunks; all three decode with nvCOMP.
    level : int, optional
        Compression level (zstd: default 3; gzip: default 5; lz4: the acceleration, default 1).
    progress : bool
        Show a tqdm progress bar (decoded bytes) on stderr.
    overwrite : bool
        Delete whatever ``dst`` holds first.

    Returns
    -------
    ConvertSummary
        Bytes in and out, ratio, time, shards written and resumed; ``str()`` gives one line.

    Raises
    ------
    FileExistsError
        If ``dst`` is not empty and is not an unfinished conversion with the same parameters.
    ValueError
        For a bad codec or shape, ``dst`` equal to ``src``, or if a written shard does not read
        back equal to the input (the conversion stops; nothing wrong is ever marked done).
    """
    import zarr

    started = time.perf_counter()
    compressor = _make_codec(codec, level)
    src_store = _as_store(src, read_only=True)
    dst_store = _as_store(dst, read_only=False)
    src_root_path, dst_root_path = _local_root(src_store), _local_root(dst_store)
    if src_store is dst_store or (src_root_path is not None and src_root_path == dst_root_path):
        raise ValueError(f"source and destination are the same store: {src!r}")

    src_root = zarr.open(store=src_store, mode="r")
    jobs, groups = _collect(src_root, chunk_shape, shard_shape)
    params = _params(jobs, codec, level)

    marker = _read_marker(dst_store)
    if overwrite:
        _sync(dst_store.clear())
        marker = None
    elif marker is not None and marker.get("params") != params:
        raise FileExistsError(
            f"{dst!r} holds an unfinished conversion with other parameters; rerun with the "
            f"same ones to resume, or pass overwrite=True to start again"
        )
    elif marker is None and not _sync(dst_store.is_empty("")):
        raise FileExistsError(
            f"{dst!r} is not empty and holds no unfinished conversion (a finished one has no "
            f"{MARKER_KEY}); pass overwrite=True to replace it"
        )
    if marker is None:
        marker = {"gds_zarr_convert": _MARKER_VERSION, "params": params, "done": {}}
        _write_marker(dst_store, marker)  # before any Zarr metadata: an interrupted DST is marked
    for j in jobs:
        j.done = set(marker["done"].get(j.path, []))

    is_group = isinstance(src_root, zarr.Group)
    if is_group:
        for path, group in groups:
            zarr.open_group(dst_store, path=path, mode="a", zarr_format=3,
                            attributes=dict(group.attrs)).attrs.put(dict(group.attrs))

    total = sum(int(j.src.nbytes) for j in jobs)
    written = skipped = 0
    with _progress_bar(total, progress) as bar:
        for j in jobs:
            out = _open_or_create(dst_store, j, compressor)
            try:
                written_j, skipped_j = _copy_array(j, out, dst, dst_store, marker, bar)
            finally:
                # Also on failure or interruption: what was verified is kept for a rerun.
                marker["done"][j.path] = sorted(j.done)
                _write_marker(dst_store, marker)
            written += written_j
            skipped += skipped_j

    if is_group and getattr(src_root.metadata, "consolidated_metadata", None) is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # consolidated metadata is not in the v3 spec yet
            zarr.consolidate_metadata(dst_store)
    _sync(dst_store.delete(MARKER_KEY))

    dst_root = zarr.open(store=dst_store, mode="r")
    bytes_out = sum(int(_member(dst_root, j.path).nbytes_stored()) for j in jobs)
    return ConvertSummary(
        arrays=tuple(j.path for j in jobs),
        groups=len(groups),
        nbytes=total,
        bytes_in=sum(int(j.src.nbytes_stored()) for j in jobs),
        bytes_out=bytes_out,
        seconds=time.perf_counter() - started,
        shards_written=written,
        shards_skipped=skipped,
    )


def _copy_array(job: _Job, out: Any, dst: Any, dst_store: Any, marker: dict[str, Any],
                bar: Any) -> tuple[int, int]:
    """Copy, verify and record every shard of one array; return (written, skipped)."""
    written = skipped = 0
    itemsize = job.src.dtype.itemsize
    last_checkpoint = time.monotonic()
    for linear, sel in job.blocks():
        block_nbytes = math.prod(s.stop - s.start for s in sel) * itemsize
        if linear in job.done:
            skipped += 1
            bar.update(block_nbytes)
            continue
        data = np.asarray(job.src[sel])
        out[sel] = data
        if not _bitwise_equal(data, np.asarray(out[sel])):
            raise ValueError(
                f"verification failed: array {job.path!r}, shard {sel} of {dst!r} does not "
                f"read back equal to the source"
            )
        job.done.add(linear)
        written += 1
        bar.update(block_nbytes)
        if time.monotonic() - last_checkpoint > _CHECKPOINT_SECONDS:
            marker["done"][job.path] = sorted(job.done)
            _write_marker(dst_store, marker)
            last_checkpoint = time.monotonic()
    return written, skipped


def _member(root: Any, path: str) -> Any:
    return root if path == "" else root[path]


class _NoBar:
    """Stands in for a tqdm bar when there is none."""

    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn("tqdm is not installed: converting without a progress bar", stacklevel=3)
        return _NoBar()
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="convert",
                dynamic_ncols=True)
