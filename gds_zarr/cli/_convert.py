"""``gds-zarr convert SRC DST``: rewrite a Zarr array or group into a GPU-friendly layout.

Wired into the ``gds-zarr`` command by :func:`add_parser` (the subcommand) and :func:`run`
(its action); the work is :func:`gds_zarr.convert.convert`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "parse_shape", "run"]


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"1024,1024"`` (or ``"1024x1024"``) into a tuple of positive ints.

    Raises
    ------
    argparse.ArgumentTypeError
        If an entry is not a positive integer.
    """
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 1024,1024, got {text!r}"
        ) from None
    if not shape or any(s < 1 for s in shape):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 1024,1024, got {text!r}"
        )
    return shape


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``convert`` subcommand to ``subparsers`` (from ``add_subparsers``).

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "convert",
        help="rewrite a Zarr array or group as sharded Zarr v3 that decodes fast on a GPU",
        description="Rewrite the Zarr array or group SRC (v2 or v3, any codec zarr reads) as a "
                    "sharded Zarr v3 copy at DST with an nvCOMP-decodable codec, one shard at a "
                    "time, verifying every shard. Rerunning after an interruption resumes.",
    )
    p.add_argument("src", metavar="SRC",
                   help="input Zarr array or group: a path or an s3://, gs://, az:// or "
                        "http(s):// URL (credentials and endpoint from the AWS_*, GOOGLE_*, "
                        "AZURE_* environment)")
    p.add_argument("dst", metavar="DST", help="output path (empty, or an unfinished conversion)")
    p.add_argument("--shard-shape", type=parse_shape, default=None, metavar="N,N,...",
                   help="shard shape for arrays with this many dimensions (default: 64-128 MiB)")
    p.add_argument("--chunk-shape", type=parse_shape, default=None, metavar="N,N,...",
                   help="inner chunk shape for arrays with this many dimensions "
                        "(default: 128-256 KiB)")
    p.add_argument("--codec", choices=("zstd", "lz4", "gzip"), default="zstd",
                   help="compressor of the inner chunks (default: zstd)")
    p.add_argument("--level", type=int, default=None,
                   help="compression level (zstd 3, gzip 5 by default; lz4: acceleration)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete whatever DST holds first")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="do not show a progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``gds-zarr convert`` with parsed ``args``.

    Returns
    -------
    int
        0 on success (the summary is printed), 2 if the conversion could not run (missing
        source, non-empty destination, bad shapes, verification failure; the reason goes to
        stderr).
    """
    from gds_zarr.convert import convert

    try:
        summary = convert(args.src, args.dst, shard_shape=args.shard_shape,
                          chunk_shape=args.chunk_shape, codec=args.codec, level=args.level,
                          progress=args.progress, overwrite=args.overwrite)
    except (OSError, ValueError, TypeError) as e:
        # convert() names its Python argument; here the same remedy is a flag.
        print(f"gds-zarr convert: {str(e).replace('overwrite=True', '--overwrite')}",
              file=sys.stderr)
        return 2
    print(summary)
    return 0
