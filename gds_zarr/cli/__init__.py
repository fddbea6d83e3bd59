"""The ``gds-zarr`` command (also ``python -m gds_zarr``).

Subcommands:

``info [--json]``
    What gds_zarr will use here (device and why, GPU, kvikio/GDS, nvCOMP, settings, codecs).
``demo [--device auto|gpu|cpu] [--shape 2048x2048] [--repeat N] [--keep DIR]``
    Write a sample array, read it back through GDSStore, check the values against zarr's,
    print the path used and the throughput. Exit status 1 on a mismatch.
``settings``
    Every setting as a Markdown table (the README's table is this output).
``convert SRC DST [...]``
    Rewrite an array or group as sharded Zarr v3 that decodes fast on a GPU
    (:mod:`gds_zarr.cli._convert`).

Exit status 2 means the command could not run (bad arguments, unusable ``--device gpu``, a
bad ``GDS_ZARR_*`` variable, a gds_zarr or OS error): one line on stderr, the traceback with
``--debug``. 130 after Ctrl-C. A closed pipe (``gds-zarr settings | head``) ends it quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gds_zarr.cli import _convert

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gds-zarr",
        description="Read Zarr arrays straight into GPU memory (kvikio + nvCOMP), "
                    "with a complete CPU path.")
    from gds_zarr import __version__

    p.add_argument("--version", action="version", version=f"gds-zarr {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an error instead of one line")
    sub = p.add_subparsers(dest="command", required=True, metavar="{info,demo,settings,convert}")
    info = sub.add_parser("info", help="what will be used here, and why",
                          description="What gds_zarr will use here (device and why, GPU, "
                                      "kvikio/GDS, nvCOMP, settings, codecs).")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    demo = sub.add_parser("demo", help="write a sample array, read it back, check and time it",
                          description="Write a sample array, read it back through GDSStore, "
                                      "check the values against zarr's and print the path "
                                      "used and the throughput.")
    demo.add_argument("--device", choices=("auto", "gpu", "cpu"), default=None,
                      help="device to read to (default: the device setting, GDS_ZARR_DEVICE)")
    demo.add_argument("--shape", default="2048x2048",
                      help="sample array shape, float32, chunks of 64 (default: 2048x2048)")
    demo.add_argument("--repeat", type=int, default=3,
                      help="reads per array; the fastest is reported (default: 3)")
    demo.add_argument("--keep", type=Path, default=None, metavar="DIR",
                      help="write the sample arrays into DIR and keep them")
    sub.add_parser("settings", help="print the settings table (Markdown)",
                   description="Every setting: name, default, environment variable, meaning "
                               "(a Markdown table; the README's table is this output).")
    _convert.add_parser(sub)
    return p


def _cmd_info(as_json: bool) -> int:
    from gds_zarr import settings
    from gds_zarr._info import info

    settings.as_dict()  # a bad GDS_ZARR_* variable is an error here, not a line of the report
    report = info()
    print(report.to_json() if as_json else report.format_text())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from gds_zarr.cli._demo import parse_shape, run_demo
    from gds_zarr.errors import DeviceUnavailableError

    try:
        shape = parse_shape(args.shape)
    except ValueError as e:
        print(f"gds-zarr demo: {e}", file=sys.stderr)
        return 2
    try:
        return run_demo(args.device, shape, args.keep, args.repeat)
    except DeviceUnavailableError as e:
        print(f"gds-zarr demo: {e}", file=sys.stderr)
        return 2


def _cmd_settings() -> int:
    from gds_zarr import settings

    print(settings.markdown_table())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gds-zarr`` command.

    Parameters
    ----------
    argv
        Arguments without the program name; None means ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 success, 1 a demo mismatch, 2 the command could not run.
        (argparse exits with status 2 itself for bad arguments.)
    """
    args = _parser().parse_args(argv)
    from gds_zarr.errors import GDSZarrError

    try:
        return _run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"gds-zarr {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): say nothing, and keep Python's exit flush quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (GDSZarrError, OSError, ValueError, KeyError) as e:
        if args.debug:
            raise
        print(f"gds-zarr {args.command}: {_one_line(e)}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "info":
        return _cmd_info(args.json)
    if args.command == "demo":
        return _cmd_demo(args)
    if args.command == "convert":
        return _convert.run(args)
    return _cmd_settings()


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())
    return f"{text} ({type(e).__name__}; --debug shows where)"
