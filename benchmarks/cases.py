"""Benchmark configuration and cases: which dataset each case reads, and which selections.

A case is a dataset plus the selections one repetition reads (one for a whole-array read, many
for the partial-read case), with the decoded bytes and chunk count that the GB/s and chunks/s
figures are computed from. The worker process rebuilds the same cases from the same
:class:`BenchConfig`, so only names cross the process boundary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from benchmarks.datasets import DatasetSpec

__all__ = [
    "ALL_CASES",
    "BenchConfig",
    "Case",
    "build_cases",
    "chunks_touched",
    "gb_per_s",
    "select_cases",
]

#: Every case name, in report order.
ALL_CASES = (
    "small-chunks",
    "large-chunks",
    "sharded",
    "partial-reads",
    "codec-lz4",
    "codec-gzip",
    "codec-blosc-lz4-shuffle",
    "codec-none",
    "store-get-partial-values",
    "gpu-scale",
    "gpu-large-8MiB",
    "gpu-large-128MiB",
    "gpu-large-256MiB",
)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Everything that decides what a run measures (the CLI fills it; tests shrink it).

    Attributes
    ----------
    quick
        Quick mode: smaller arrays, fewer codecs and repetitions (labelled in the results).
    size
        Edge of the 2-D float32 arrays (4096 full, 1024 quick).
    repeat
        Timed repetitions after one warm-up; the median is reported.
    cold
        Evict the dataset's files from the page cache before every repetition.
    windows, window
        Number and edge of the random windows of the partial-read case.
    codecs
        Codecs of the ``codec-*`` cases (the small-chunk array with another codec).
    store_files, store_file_bytes
        The store case: this many files of this size, all read by one call.
    scale_chunks, scale_chunk_len, scale_shard_chunks
        GPU scale case: a 1-D sharded float32 array of ``scale_chunks`` inner chunks of
        ``scale_chunk_len`` elements, ``scale_shard_chunks`` inner chunks per shard.
    gpu_large_mib, gpu_large_total_mib
        GPU large-chunk cases: chunk sizes (MiB) and the array size (MiB) of each.
    case_timeout_s
        A reader still busy with one case after this long is stopped; the case says so.
    seed
        Seed of the data and of the windows.
    """

    quick: bool = False
    size: int = 4096
    repeat: int = 5
    cold: bool = False
    windows: int = 100
    window: int = 256
    codecs: tuple[str, ...] = ("lz4", "gzip", "blosc-lz4-shuffle", "none")
    store_files: int = 4096
    store_file_bytes: int = 16 << 10
    scale_chunks: int = 1 << 20
    scale_chunk_len: int = 2048
    scale_shard_chunks: int = 1 << 14
    gpu_large_mib: tuple[int, ...] = (8, 128, 256)
    gpu_large_total_mib: int = 1024
    case_timeout_s: float = 600.0
    seed: int = 0

    @classmethod
    def quick_defaults(cls, **overrides: Any) -> BenchConfig:
        """The quick-mode configuration (under 2 minutes on 2 cores), with ``overrides``."""
        base: dict[str, Any] = dict(quick=True, size=1024, repeat=3, windows=25,
                                    codecs=("lz4", "none"), scale_chunks=1 << 16,
                                    scale_shard_chunks=1 << 12, gpu_large_mib=(8, 128),
                                    gpu_large_total_mib=256, case_timeout_s=120.0)
        base.update(overrides)
        return cls(**base)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists); :meth:`from_json` inverts it."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchConfig:
        """Rebuild a config written by :meth:`to_json`."""
        kinds = {f.name: f for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v
                      for k, v in data.items() if k in kinds})


@dataclass(frozen=True, slots=True)
class Case:
    """One case: a dataset and the selections a repetition reads.

    Attributes
    ----------
    name
        One of :data:`ALL_CASES`.
    dataset
        What is read.
    selections
        Read one after the other in one repetition (the time covers them all).
    chunks
        Chunks decoded per repetition (inner chunks for sharded arrays; files for the store
        case): the numerator of chunks/s.
    nbytes
        Decoded bytes returned per repetition: the numerator of GB/s.
    description
        One line for the report.
    gpu_only
        Skipped unless the device is a GPU.
    store
        The store case (``get_partial_values`` of every file in one call).
    """

    name: str
    dataset: DatasetSpec
    selections: tuple[tuple[slice, ...], ...]
    chunks: int
    nbytes: int
    description: str
    gpu_only: bool = False
    store: bool = False


def chunks_touched(selection: tuple[slice, ...], chunks: tuple[int, ...]) -> int:
    """Number of chunks of shape ``chunks`` that a box selection of step 1 intersects."""
    n = 1
    for s, c in zip(selection, chunks, strict=True):
        start, stop = s.start or 0, s.stop
        n *= (stop - 1) // c - start // c + 1 if stop > start else 0
    return n


def _whole(spec: DatasetSpec, description: str, name: str, gpu_only: bool = False) -> Case:
    sel = tuple(slice(0, n) for n in spec.shape)
    return Case(name, spec, (sel,), chunks_touched(sel, spec.chunks), spec.nbytes, description,
                gpu_only=gpu_only)


def build_cases(cfg: BenchConfig) -> dict[str, Case]:
    """Every case of ``cfg``, keyed by name, in report order."""
    n = cfg.size
    big, inner = min(1024, n), min(64, n)

    def array(kind: str, codec: str, chunks: int, shards: int | None = None) -> DatasetSpec:
        return DatasetSpec(f"{kind}-{codec}-{n}", (n, n), (chunks, chunks),
                           (shards, shards) if shards else None, codec, seed=cfg.seed)

    small = array("small", "zstd", inner)
    sharded = array("sharded", "zstd", inner, big)
    cases = [
        _whole(small, f"{n}x{n} float32, {inner}x{inner} chunks, zstd-3", "small-chunks"),
        _whole(array("large", "zstd", big), f"{n}x{n} float32, {big}x{big} chunks, zstd-3",
               "large-chunks"),
        _whole(sharded, f"{n}x{n} float32, {big}x{big} shards of {inner}x{inner}, zstd-3",
               "sharded"),
        _partial(cfg, sharded),
    ]
    for codec in cfg.codecs:
        spec = array("small", codec, inner)
        cases.append(_whole(spec, f"small-chunks array with codec {codec}", f"codec-{codec}"))
    cases.append(_store_case(cfg))
    cases.append(_scale_case(cfg))
    cases += [_gpu_large(cfg, mib) for mib in cfg.gpu_large_mib]
    return {c.name: c for c in cases}


def _partial(cfg: BenchConfig, sharded: DatasetSpec) -> Case:
    w = min(cfg.window, cfg.size)
    starts = np.random.default_rng(cfg.seed + 1).integers(0, cfg.size - w + 1,
                                                           size=(cfg.windows, 2))
    sels = tuple((slice(int(a), int(a) + w), slice(int(b), int(b) + w)) for a, b in starts)
    chunks = sum(chunks_touched(s, sharded.chunks) for s in sels)
    return Case("partial-reads", sharded, sels, chunks, cfg.windows * w * w * 4,
                f"{cfg.windows} random {w}x{w} windows (seed {cfg.seed + 1}) of the sharded "
                "array, read one after the other")


def _store_case(cfg: BenchConfig) -> Case:
    spec = DatasetSpec(f"files-{cfg.store_files}x{cfg.store_file_bytes}",
                       (cfg.store_files, cfg.store_file_bytes), (1, cfg.store_file_bytes),
                       layout="files", codec="none", seed=cfg.seed)
    return Case("store-get-partial-values", spec, (), cfg.store_files, spec.nbytes,
                f"{cfg.store_files} files of {cfg.store_file_bytes // 1024} KiB, one "
                "get_partial_values call with every key (default CPU prototype)", store=True)


def _scale_case(cfg: BenchConfig) -> Case:
    n = cfg.scale_chunks * cfg.scale_chunk_len
    spec = DatasetSpec(f"scale-{cfg.scale_chunks}x{cfg.scale_chunk_len}", (n,),
                       (cfg.scale_chunk_len,), (cfg.scale_shard_chunks * cfg.scale_chunk_len,),
                       "zstd", layout="manual-shards", variants=64, seed=cfg.seed)
    kib = cfg.scale_chunk_len * 4 // 1024
    return _whole(spec, f"1-D float32, {cfg.scale_chunks} inner chunks of {kib} KiB in shards "
                        f"of {cfg.scale_shard_chunks}, zstd-3", "gpu-scale", gpu_only=True)


def _gpu_large(cfg: BenchConfig, mib: int) -> Case:
    chunk = (mib << 20) // 4
    n = max(chunk, (cfg.gpu_large_total_mib << 20) // 4 // chunk * chunk)
    spec = DatasetSpec(f"gpu-large-{mib}MiB-{n}", (n,), (chunk,), None, "zstd", seed=cfg.seed)
    return _whole(spec, f"1-D float32 of {n * 4 >> 20} MiB, chunks of {mib} MiB, zstd-3",
                  f"gpu-large-{mib}MiB", gpu_only=True)


def select_cases(all_cases: dict[str, Case], names: list[str] | None) -> list[Case]:
    """The cases named (all of them for None), in report order; unknown names raise."""
    if not names:
        return list(all_cases.values())
    unknown = [n for n in names if n not in ALL_CASES]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; known: {', '.join(ALL_CASES)}")
    missing = [n for n in names if n not in all_cases]
    if missing:
        raise ValueError(f"case(s) {missing} are not in this configuration (codecs "
                         f"or GPU sizes left out); configured: {', '.join(all_cases)}")
    return [c for c in all_cases.values() if c.name in names]


def gb_per_s(nbytes: int, seconds: float) -> float:
    """Decimal GB/s (1e9 bytes per second), as storage bandwidth is usually quoted."""
    return nbytes / seconds / 1e9 if seconds > 0 else math.inf
