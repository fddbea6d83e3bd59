"""Benchmark datasets: what each holds, how it is written, and the values a reader must return.

Datasets are written once per data directory and reused: each one's directory holds a marker
file with the exact spec it was written from, so a changed spec rewrites it and an unchanged one
costs nothing. Values are deterministic (seeded), so every reader's output is checked against
data regenerated here rather than against another reader.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "CODECS",
    "DatasetSpec",
    "check_values",
    "drop_page_cache",
    "ensure_dataset",
    "expected_values",
    "files_of",
    "make_data",
    "store_keys",
]

#: Bumped whenever the bytes a spec produces change, so cached datasets are rewritten.
FORMAT_VERSION = 1
_MARKER = ".bench-spec.json"

#: Codec names the cases use; ``zstd`` is level 3 everywhere (the issue's default).
CODECS = ("zstd", "lz4", "gzip", "blosc-lz4-shuffle", "none", "v2-blosc-lz4-shuffle",
          "v2-blosc-zstd-bitshuffle")

Layout = Literal["zarr", "manual-shards", "files"]


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """One on-disk dataset.

    Attributes
    ----------
    name
        Directory name under the data directory.
    shape
        Array shape (float32), or ``(n_files, file_bytes)`` for ``layout="files"``.
    chunks
        Chunk shape; for a sharded array, the inner chunk shape.
    shards
        Shard shape, or None for an unsharded array.
    codec
        One of :data:`CODECS`.
    layout
        ``"zarr"``: written by zarr-python; ``"manual-shards"``: a 1-D sharded array whose shard
        files are assembled here from ``variants`` distinct encoded chunks (zarr's own writer
        needs hours for millions of inner chunks); ``"files"``: plain files for the store case.
    variants
        ``manual-shards`` only: chunk ``i`` holds variant ``i % variants``.
    seed
        Seed of the values.
    """

    name: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None = None
    codec: str = "zstd"
    layout: Layout = "zarr"
    variants: int = 0
    seed: int = 0

    @property
    def nbytes(self) -> int:
        """Decoded size of the whole dataset in bytes."""
        itemsize = 1 if self.layout == "files" else 4
        return math.prod(self.shape) * itemsize

    def marker(self) -> str:
        """The text stored in the dataset's marker file."""
        return json.dumps({"format": FORMAT_VERSION, **asdict(self)}, sort_keys=True)


def make_data(shape: Sequence[int], seed: int) -> np.ndarray:
    """Deterministic float32 values in [0, 1024): whole numbers, so codecs compress ~2x.

    Random whole numbers are a middle ground: real measurements compress better than noise
    and worse than constants, and a reader cannot shortcut them.
    """
    rng = np.random.default_rng(seed)
    # int16 first: generating int64 would double the peak memory of the 1 GiB datasets.
    return rng.integers(0, 1024, size=tuple(shape), dtype=np.int16).astype(np.float32)


def _compressors(codec: str) -> Any:
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    if codec.startswith("v2-blosc-"):  # zarr v2 arrays: numcodecs' Blosc (v2's default)
        import numcodecs

        cname, shuffle = codec.split("-")[2], codec.split("-")[3]
        return numcodecs.Blosc(cname=cname, clevel=5, shuffle={
            "shuffle": numcodecs.Blosc.SHUFFLE, "bitshuffle": numcodecs.Blosc.BITSHUFFLE}[shuffle])
    if codec == "zstd":
        return ZstdCodec(level=3)
    if codec == "gzip":
        return GzipCodec(level=5)
    if codec == "blosc-lz4-shuffle":
        return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=4)
    if codec == "lz4":
        from zarr.codecs.numcodecs import LZ4

        return LZ4()
    if codec == "none":
        return None
    raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")


def _create_array(spec: DatasetSpec, path: Path) -> Any:
    import zarr

    with warnings.catch_warnings():
        # zarr warns that numcodecs.* codecs are not in the v3 spec; that is the point here.
        warnings.simplefilter("ignore", UserWarning)
        return zarr.create_array(
            zarr.storage.LocalStore(path),
            shape=spec.shape,
            chunks=spec.chunks,
            shards=spec.shards,
            dtype="float32",
            compressors=_compressors(spec.codec),
            fill_value=0,
            zarr_format=2 if spec.codec.startswith("v2-") else 3,
        )


def _write_zarr(spec: DatasetSpec, path: Path) -> None:
    _create_array(spec, path)
    # The default pipeline with zarr's defaults: whatever codec_pipeline.path the environment
    # sets (a benchmarked pipeline, say) must not write the reference data.
    import zarr

    pipeline = "zarr.core.codec_pipeline.BatchedCodecPipeline"
    with zarr.config.set({"codec_pipeline.path": pipeline}), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        arr = zarr.open_array(zarr.storage.LocalStore(path), mode="r+")
        arr[...] = make_data(spec.shape, spec.seed)


def _write_manual_shards(spec: DatasetSpec, path: Path) -> None:
    """Assemble the shard files of a 1-D zstd-sharded array directly (see DatasetSpec)."""
    import google_crc32c
    from numcodecs import Zstd

    if len(spec.shape) != 1 or spec.shards is None or spec.codec != "zstd":
        raise ValueError(f"manual-shards needs a 1-D zstd sharded spec, got {spec}")
    _create_array(spec, path)  # writes zarr.json only
    (chunk_len,), (shard_len,) = spec.chunks, spec.shards
    n_chunks = spec.shape[0] // chunk_len
    per_shard = shard_len // chunk_len
    if spec.shape[0] % shard_len or shard_len % chunk_len:
        raise ValueError(f"shape, shards and chunks must divide evenly: {spec}")
    codec = Zstd(level=3)  # the bytes zarr's ZstdCodec(level=3) writes
    blobs = [bytes(codec.encode(v.tobytes())) for v in _variants(spec)]
    sizes = np.array([len(b) for b in blobs], dtype=np.uint64)
    for s in range(n_chunks // per_shard):
        ids = np.arange(s * per_shard, (s + 1) * per_shard) % spec.variants
        nbytes = sizes[ids]
        offsets = np.concatenate(([0], np.cumsum(nbytes)[:-1])).astype(np.uint64)
        index = np.stack([offsets, nbytes], axis=1).astype("<u8").tobytes()
        crc = int(google_crc32c.value(index)).to_bytes(4, "little")
        target = path / "c" / str(s)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            f.write(b"".join(blobs[i] for i in ids))
            f.write(index)
            f.write(crc)


def _variants(spec: DatasetSpec) -> np.ndarray:
    return make_data((spec.variants, spec.chunks[0]), spec.seed)


def _write_files(spec: DatasetSpec, path: Path) -> None:
    n, size = spec.shape
    data = np.random.default_rng(spec.seed).integers(0, 256, size=(n, size), dtype=np.uint8)
    path.mkdir(parents=True, exist_ok=True)
    for key, row in zip(store_keys(spec), data, strict=True):
        (path / key).write_bytes(row.tobytes())


def store_keys(spec: DatasetSpec) -> list[str]:
    """Keys (file names) of a ``layout="files"`` dataset, in the order of its rows."""
    width = len(str(spec.shape[0]))
    return [f"f{i:0{width}d}" for i in range(spec.shape[0])]


def ensure_dataset(spec: DatasetSpec, root: Path) -> Path:
    """Write ``spec`` under ``root`` unless an identical copy is there; return its path.

    The dataset is written to a temporary sibling and renamed into place, so an interrupted
    run never leaves a half-written dataset that looks complete.
    """
    path = root / spec.name
    marker = path / _MARKER
    if marker.exists() and marker.read_text() == spec.marker():
        return path
    tmp = root / f".{spec.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    writer = {"zarr": _write_zarr, "manual-shards": _write_manual_shards, "files": _write_files}
    writer[spec.layout](spec, tmp)
    (tmp / _MARKER).write_text(spec.marker())
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


@lru_cache(maxsize=2)
def _full(spec: DatasetSpec) -> np.ndarray:
    return make_data(spec.shape, spec.seed)


def expected_values(spec: DatasetSpec, selection: tuple[slice, ...]) -> np.ndarray:
    """What a correct reader returns for ``selection`` of a ``layout="zarr"`` dataset."""
    return _full(spec)[selection]


def check_values(spec: DatasetSpec, selection: tuple[slice, ...], out: Any) -> str | None:
    """Compare a reader's output with the true values; None if equal, else what differs.

    ``manual-shards`` datasets (millions of chunks) are checked on up to 4096 evenly spaced
    chunks plus the first and last, on the device the output lives on.
    """
    if spec.layout == "manual-shards":
        return _check_sampled(spec, selection, out)
    want = expected_values(spec, selection)
    got = _to_numpy(out)
    if got.shape != want.shape:
        return f"shape {got.shape}, expected {want.shape}"
    if got.dtype != want.dtype:
        return f"dtype {got.dtype}, expected {want.dtype}"
    if not np.array_equal(got, want):
        return f"{int((got != want).sum())} of {want.size} values differ"
    return None


def _check_sampled(spec: DatasetSpec, selection: tuple[slice, ...], out: Any) -> str | None:
    start, stop, _ = selection[0].indices(spec.shape[0])
    chunk_len = spec.chunks[0]
    if start % chunk_len or (stop - start) % chunk_len or out.shape != (stop - start,):
        return f"sampled check needs a chunk-aligned 1-D selection, got {selection}"
    n = (stop - start) // chunk_len
    rows = np.unique(np.linspace(0, n - 1, min(n, 4096)).astype(np.int64))
    got = out.reshape(n, chunk_len)[_like(out, rows)]
    want = _variants(spec)[(rows + start // chunk_len) % spec.variants]
    if not np.array_equal(_to_numpy(got), want):
        return "sampled chunks differ from the written values"
    return None


def _like(out: Any, idx: np.ndarray) -> Any:
    mod = type(out).__module__.split(".")[0]
    if mod == "cupy":
        import cupy

        return cupy.asarray(idx)
    return idx


def _to_numpy(out: Any) -> np.ndarray:
    if hasattr(out, "get") and type(out).__module__.split(".")[0] == "cupy":
        return out.get()
    return np.asarray(out)


def files_of(path: Path) -> list[Path]:
    """Every data file of a dataset (what a cold-cache run must evict)."""
    return [p for p in _walk(path) if p.name != _MARKER]


def _walk(path: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(path):
        for n in names:
            yield Path(dirpath) / n


def drop_page_cache(files: Sequence[Path]) -> None:
    """Evict ``files`` from the page cache (needs no root; dirty pages are flushed first).

    ``POSIX_FADV_DONTNEED`` drops clean cached pages of the file; ``os.sync`` first makes
    freshly written pages clean, otherwise they would silently stay cached.
    """
    os.sync()
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
