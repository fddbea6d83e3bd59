"""The container's install check: the GPU stack imports and ``gds-zarr info --json`` runs.

``docker/Dockerfile`` runs it at build time, where there is no GPU: the device may then be the
CPU, but CuPy, kvikio and nvCOMP must import and ``gds-zarr info --json`` must succeed and
find them importable, so a broken wheel (a missing shared library, a CUDA mismatch) fails the
build rather than the first run. With ``--gpu``, in a container started with ``--gpus all``,
the GPU must also be usable::

    docker run --rm --gpus all --entrypoint python gds-zarr \
        /opt/src/gds-zarr/docker/check_install.py --gpu

Exit status 0 when every check passes, 1 otherwise (each failure on its own line on stderr).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: The GPU libraries of the ``cu12``/``cu13`` extras, as imported, and their key in ``info``.
LIBRARIES = {"cupy": "cupy", "kvikio": "kvikio", "nvidia.nvcomp": "nvcomp"}


def _gds_zarr() -> str:
    """The ``gds-zarr`` command of this interpreter's environment (the console script)."""
    beside = Path(sys.executable).with_name("gds-zarr")
    return str(beside) if beside.exists() else shutil.which("gds-zarr") or "gds-zarr"


def check(gpu: bool = False) -> list[str]:
    """Run the checks, printing what was found; the failures, one line each."""
    failed = []
    for name in LIBRARIES:
        try:
            module = importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - a broken wheel raises OSError, RuntimeError too
            failed.append(f"import {name}: {type(e).__name__}: {e}")
        else:
            print(f"{name} {getattr(module, '__version__', '(no version)')}")
    from gds_zarr.decode import _blosc_native

    print("C kernels:", _blosc_native.simd_level())
    try:
        done = subprocess.run([_gds_zarr(), "info", "--json"], capture_output=True, text=True,
                              timeout=300, check=False)
    except OSError as e:
        return [*failed, f"gds-zarr info --json: {e}"]
    if done.returncode != 0:
        return [*failed, f"gds-zarr info --json exited {done.returncode}: "
                         f"{done.stderr.strip()[-2000:]}"]
    try:
        info = json.loads(done.stdout)
    except ValueError as e:
        return [*failed, f"gds-zarr info --json printed no JSON ({e}): {done.stdout[:500]!r}"]
    for name, key in LIBRARIES.items():
        if not info[key]["importable"]:
            failed.append(f"gds-zarr info: {name} is not importable: {info[key]['error']}")
    device = info["device"]
    print(f"device: {device['device']} ({device['reason']})")
    if gpu and device["device"] != "gpu":
        failed.append(f"no usable GPU (run the container with --gpus all): {device['reason']}")
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true",
                        help="also require a usable GPU (a container run with --gpus all)")
    failed = check(parser.parse_args(argv).gpu)
    for line in failed:
        print(f"check_install: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
