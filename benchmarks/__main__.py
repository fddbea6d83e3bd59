"""``python -m benchmarks``: gds_zarr against zarr, zarrs, tensorstore (and GPU peers)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.cases import ALL_CASES, FAMILIES, BenchConfig
from benchmarks.readers import READERS

__all__ = ["main", "parser"]


def _names(text: str) -> list[str]:
    return [n.strip() for part in text.split(",") for n in part.split() if n.strip()]


def _edges(text: str) -> tuple[int, ...]:
    try:
        edges = tuple(int(n) for n in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not edges or min(edges) < 1:
        raise argparse.ArgumentTypeError(f"expected positive edges, got {text!r}")
    return edges


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks``."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Create the benchmark datasets if missing, run every reader on every "
                    "case (one warm-up, then --repeat timed runs) and write Markdown, JSON and "
                    "PNG results.")
    p.add_argument("--quick", action="store_true",
                   help="small arrays, fewer codecs and repetitions (< 2 min on 2 cores)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"),
                   help="device of gds_zarr and of the GPU peers (default: auto)")
    p.add_argument("--data", type=Path, default=None,
                   help="dataset directory; created and reused (default ~/.cache/gds_zarr-bench)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                   help="results directory (default benchmarks/results)")
    p.add_argument("--cases", type=_names, default=[],
                   help=f"comma-separated subset of: {', '.join(ALL_CASES)}; or a family: "
                        f"{', '.join(FAMILIES)} (all its chunk-<size>-... members)")
    p.add_argument("--readers", type=_names, default=[],
                   help=f"comma-separated subset of: {', '.join(READERS)}")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed repetitions after the warm-up (default 5, quick 3)")
    p.add_argument("--cold", action="store_true",
                   help="evict the dataset's files from the page cache before each repetition")
    p.add_argument("--size", type=int, default=None,
                   help="edge of the 2-D arrays (default 4096, quick 1024)")
    p.add_argument("--windows", type=int, default=None,
                   help="random windows of the partial-read case (default 100, quick 25)")
    p.add_argument("--store-files", type=int, default=None, help="files of the store case (4096)")
    p.add_argument("--store-file-bytes", type=int, default=None,
                   help="bytes per file of the store case (16384)")
    p.add_argument("--chunk-edges", type=_edges, default=None,
                   help="inner-chunk edges of the chunk-sizes family "
                        "(default 64,128,256,512,1024; quick 64,256)")
    p.add_argument("--case-timeout", type=float, default=None,
                   help="seconds one reader may spend on one case (default 600, quick 120)")
    return p


def config_from_args(a: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` the parsed arguments ask for."""
    overrides = {k: v for k, v in {
        "repeat": a.repeat, "size": a.size, "windows": a.windows, "store_files": a.store_files,
        "store_file_bytes": a.store_file_bytes, "case_timeout_s": a.case_timeout,
        "chunk_edges": a.chunk_edges,
    }.items() if v is not None}
    overrides["cold"] = a.cold
    return BenchConfig.quick_defaults(**overrides) if a.quick else BenchConfig(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table and the paths of the results files."""
    from benchmarks.runner import run

    args = list(sys.argv[1:] if argv is None else argv)
    a = parser().parse_args(args)
    cfg = config_from_args(a)
    command = shlex.join(["python", "-m", "benchmarks", *args])
    try:
        result = run(cfg, device=a.device, data_dir=a.data, out_dir=a.out,
                     case_names=a.cases, reader_names=a.readers, command=command)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(result.table)
    print("results written:", *map(str, result.files), sep="\n  ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
