"""Benchmark configuration and cases: which dataset each case reads, and which selections.

A case is a dataset plus the selections one repetition reads (one for a whole-array read, many
for the partial-read case), with the decoded bytes and chunk count that the GB/s and chunks/s
figures are computed from. The worker process rebuilds the same cases from the same
:class:`BenchConfig`, so only names cross the process boundary.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from benchmarks.datasets import DatasetSpec

__all__ = [
    "ALL_CASES",
    "FAMILIES",
    "BenchConfig",
    "Case",
    "build_cases",
    "chunk_label",
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
    "windows-batched",
    "tiny-reads",
    "loader",
    "codec-lz4",
    "codec-gzip",
    "codec-blosc-lz4-shuffle",
    "codec-none",
    "blosc-v2",
    "blosc-zstd-bitshuffle",
    "store-get-partial-values",
    "gpu-scale",
    "gpu-large-8MiB",
    "gpu-large-128MiB",
    "gpu-large-256MiB",
)

#: Case families: one name selects every member the configuration has (members are named
#: ``chunk-<size>-<sharded|unsharded>[-windows]``, e.g. ``chunk-64KiB-sharded-windows``).
FAMILIES = ("chunk-sizes",)

#: The four series of the ``chunk-sizes`` family, in report order.
CHUNK_SERIES = ("sharded", "unsharded", "sharded-windows", "unsharded-windows")


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
    chunk_edges
        ``chunk-sizes`` family: edges of the square float32 inner chunks (64 -> 16 KiB,
        1024 -> 4 MiB), each stored sharded (shards of ``size`` x ``size/4``) and unsharded.
    tiny_reads
        ``tiny-reads``: 1-element reads per repetition (one call each: the per-call cost).
    loader_windows, loader_window, loader_batch
        ``loader``: windows per epoch, their edge, and windows per batch.
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
    chunk_edges: tuple[int, ...] = (64, 128, 256, 512, 1024)
    tiny_reads: int = 200
    loader_windows: int = 512
    loader_window: int = 64
    loader_batch: int = 32
    case_timeout_s: float = 600.0
    seed: int = 0

    @classmethod
    def quick_defaults(cls, **overrides: Any) -> BenchConfig:
        """The quick-mode configuration (under 2 minutes on 2 cores), with ``overrides``."""
        base: dict[str, Any] = dict(quick=True, size=1024, repeat=3, windows=25,
                                    codecs=("lz4", "none"), scale_chunks=1 << 16,
                                    scale_shard_chunks=1 << 12, gpu_large_mib=(8, 128),
                                    gpu_large_total_mib=256, chunk_edges=(64, 256),
                                    tiny_reads=50, loader_windows=128, case_timeout_s=120.0)
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
    family
        The family the case belongs to (``"chunk-sizes"``), or ``""``.
    series
        Within a family: which curve the case is a point of (one of :data:`CHUNK_SERIES`).
    chunk_nbytes
        Decoded bytes of one (inner) chunk of an array case; 0 for the store case.
        ``chunks * chunk_nbytes / nbytes`` is the read amplification.
    mode
        ``"each"``: the selections one call after the other; ``"batched"``: all of them in
        one request (``read_many``, tensorstore's concurrent futures; one call each for
        readers without a batched form); ``"loader"``: an epoch of batches of ``batch``
        windows (the selections, in order), timed without and with a consumer.
    batch
        Windows per batch of a ``loader`` case.
    """

    name: str
    dataset: DatasetSpec
    selections: tuple[tuple[slice, ...], ...]
    chunks: int
    nbytes: int
    description: str
    gpu_only: bool = False
    store: bool = False
    family: str = ""
    series: str = ""
    chunk_nbytes: int = 0
    mode: str = "each"
    batch: int = 0

    @property
    def amplification(self) -> float:
        """Bytes decoded per byte returned (1.0 for chunk-aligned whole-array reads)."""
        return self.chunks * self.chunk_nbytes / self.nbytes if self.chunk_nbytes else 1.0


def chunk_label(nbytes: int) -> str:
    """``16KiB``, ``1MiB``: a power-of-two-ish byte count for case names and tables."""
    if nbytes >= 1 << 20 and nbytes % (1 << 20) == 0:
        return f"{nbytes >> 20}MiB"
    if nbytes >= 1 << 10 and nbytes % (1 << 10) == 0:
        return f"{nbytes >> 10}KiB"
    return f"{nbytes}B"


def chunks_touched(selection: tuple[slice, ...], chunks: tuple[int, ...]) -> int:
    """Number of chunks of shape ``chunks`` that a box selection of step 1 intersects."""
    n = 1
    for s, c in zip(selection, chunks, strict=True):
        start, stop = s.start or 0, s.stop
        n *= (stop - 1) // c - start // c + 1 if stop > start else 0
    return n


def _whole(spec: DatasetSpec, description: str, name: str, gpu_only: bool = False,
           **extra: Any) -> Case:
    sel = tuple(slice(0, n) for n in spec.shape)
    return Case(name, spec, (sel,), chunks_touched(sel, spec.chunks), spec.nbytes, description,
                gpu_only=gpu_only, chunk_nbytes=math.prod(spec.chunks) * 4, **extra)


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
        *_many_cases(cfg, array(f"sharded{min(128, n)}", "zstd", min(128, n), big)),
    ]
    for codec in cfg.codecs:
        spec = array("small", codec, inner)
        cases.append(_whole(spec, f"small-chunks array with codec {codec}", f"codec-{codec}"))
    for name, codec in (("blosc-v2", "v2-blosc-lz4-shuffle"),
                        ("blosc-zstd-bitshuffle", "v2-blosc-zstd-bitshuffle")):
        if n >= 256:  # the layout: zarr v2, Blosc, 256x256 chunks
            cases.append(_whole(array("blosc", codec, 256), f"{n}x{n} float32, 256x256 "
                                f"chunks, zarr v2, numcodecs Blosc {codec[9:]}", name))
    cases.append(_store_case(cfg))
    cases.append(_scale_case(cfg))
    cases += [_gpu_large(cfg, mib) for mib in cfg.gpu_large_mib]
    cases += _chunk_sizes(cfg, {"small": inner, "large": big})
    return {c.name: c for c in cases}


def _windows(cfg: BenchConfig) -> tuple[tuple[slice, ...], ...]:
    """The random windows every partial-read case reads (the same ones, seed ``seed + 1``)."""
    w = min(cfg.window, cfg.size)
    starts = np.random.default_rng(cfg.seed + 1).integers(0, cfg.size - w + 1,
                                                           size=(cfg.windows, 2))
    return tuple((slice(int(a), int(a) + w), slice(int(b), int(b) + w)) for a, b in starts)


def _windowed(cfg: BenchConfig, spec: DatasetSpec, name: str, description: str,
              **extra: Any) -> Case:
    sels = _windows(cfg)
    w = sels[0][0].stop - sels[0][0].start
    chunks = sum(chunks_touched(s, spec.chunks) for s in sels)
    return Case(name, spec, sels, chunks, len(sels) * w * w * 4,
                f"{len(sels)} random {w}x{w} windows (seed {cfg.seed + 1}) of {description}, "
                "read one after the other", chunk_nbytes=math.prod(spec.chunks) * 4, **extra)


def _partial(cfg: BenchConfig, sharded: DatasetSpec) -> Case:
    return _windowed(cfg, sharded, "partial-reads", "the sharded array")


def _many_cases(cfg: BenchConfig, spec: DatasetSpec) -> list[Case]:
    """The training-workload cases on one sharded array (128x128 inner chunks by default)."""
    c = spec.chunks[0]
    what = f"the {spec.shape[0]}x{spec.shape[1]} float32 array in {spec.shards} shards of " \
           f"{c}x{c} chunks, zstd-3"
    batched = _windowed(cfg, spec, "windows-batched", what, mode="batched")
    batched = dataclasses.replace(batched, description=batched.description.replace(
        "read one after the other", "in one request (read_many; tensorstore: concurrent "
        "futures; zarr, zarrs, FusedCodecPipeline: one call per window)"))
    rng = np.random.default_rng(cfg.seed + 2)
    pos = rng.integers(0, spec.shape[0], size=(cfg.tiny_reads, 2))
    tiny = tuple((slice(int(a), int(a) + 1), slice(int(b), int(b) + 1)) for a, b in pos)
    w = min(cfg.loader_window, cfg.size)
    corners = np.random.default_rng(cfg.seed + 3).integers(
        0, cfg.size - w + 1, size=(cfg.loader_windows, 2))
    windows = tuple((slice(int(a), int(a) + w), slice(int(b), int(b) + w)) for a, b in corners)
    n_batches = -(-cfg.loader_windows // cfg.loader_batch)
    return [
        batched,
        Case("tiny-reads", spec, tiny, cfg.tiny_reads, cfg.tiny_reads * 4,
             f"{cfg.tiny_reads} 1-element reads of {what}, one call each (the per-call cost)",
             chunk_nbytes=c * c * 4),
        Case("loader", spec, windows, sum(chunks_touched(s, spec.chunks) for s in windows),
             len(windows) * w * w * 4,
             f"an epoch of {n_batches} batches of {cfg.loader_batch} random {w}x{w} windows "
             f"(seed {cfg.seed + 3}) of {what}: gds_zarr's WindowLoader (reads ahead in a "
             "thread), the others a loop of batched reads", chunk_nbytes=c * c * 4,
             mode="loader", batch=cfg.loader_batch),
    ]


def chunk_shard_shape(size: int, edge: int) -> tuple[int, int]:
    """Shard shape of the ``chunk-sizes`` family: ``size`` x ``size/4``, whole inner chunks.

    A quarter of the array per shard: 16 MiB decoded (~8 MiB zstd) at 4096x4096. The guide's
    64 MiB shard would be the whole 64 MiB array, leaving readers that parallelise over shards
    a single unit of work; four shards keep that parallelism while each shard still holds
    from 4 (4 MiB chunks) to 1024 (16 KiB chunks) inner chunks.
    """
    cols = max(edge, (size // 4) // edge * edge)
    return (size, cols)


def _chunk_sizes(cfg: BenchConfig, shared: dict[str, int]) -> list[Case]:
    """The ``chunk-sizes`` family: one array at every inner-chunk size, sharded or not,
    read whole and through the partial-read windows."""
    n = cfg.size
    cases: list[Case] = []
    for edge in dict.fromkeys(min(e, n) for e in cfg.chunk_edges):
        label = chunk_label(edge * edge * 4)
        shard = chunk_shard_shape(n, edge)
        # Reuse the small-/large-chunk datasets where identical: same spec, same directory.
        kind = next((k for k, e in shared.items() if e == edge), f"chunks{edge}")
        plain = DatasetSpec(f"{kind}-zstd-{n}", (n, n), (edge, edge), None, "zstd",
                            seed=cfg.seed)
        sharded = DatasetSpec(f"shards{shard[0]}x{shard[1]}-of-{edge}-zstd-{n}", (n, n),
                              (edge, edge), shard, "zstd", seed=cfg.seed)
        what = {
            "sharded": (sharded, f"{n}x{n} float32, {shard[0]}x{shard[1]} shards of "
                                 f"{edge}x{edge} ({label}) inner chunks, zstd-3"),
            "unsharded": (plain, f"{n}x{n} float32, {edge}x{edge} ({label}) chunks, zstd-3"),
        }
        for layout, (spec, text) in what.items():
            name = f"chunk-{label}-{layout}"
            cases.append(_whole(spec, text, name, family="chunk-sizes", series=layout))
            cases.append(_windowed(cfg, spec, f"{name}-windows", text, family="chunk-sizes",
                                   series=f"{layout}-windows"))
    return cases


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
    """The cases named (all of them for None), in report order; unknown names raise.

    A family name (:data:`FAMILIES`) selects all its members in this configuration; a
    member can also be named on its own.
    """
    if not names:
        return list(all_cases.values())
    members = [c.name for c in all_cases.values() if c.family]
    unknown = [n for n in names if n not in ALL_CASES and n not in FAMILIES
               and n not in members]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; known: {', '.join(ALL_CASES)}, and the "
                         f"families {', '.join(FAMILIES)} (members: {', '.join(members)})")
    names = [c.name for n in names
             for c in (all_cases.values() if n in FAMILIES else ())
             if c.family == n] + [n for n in names if n not in FAMILIES]
    missing = [n for n in names if n not in all_cases]
    if missing:
        raise ValueError(f"case(s) {missing} are not in this configuration (codecs "
                         f"or GPU sizes left out); configured: {', '.join(all_cases)}")
    return [c for c in all_cases.values() if c.name in names]


def gb_per_s(nbytes: int, seconds: float) -> float:
    """Decimal GB/s (1e9 bytes per second), as storage bandwidth is usually quoted."""
    return nbytes / seconds / 1e9 if seconds > 0 else math.inf
