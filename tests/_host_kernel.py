"""CUDA kernels compiled as host C++, so their index arithmetic runs without a GPU.

Not a test module (no ``test_`` prefix): the ``*_gpu_host`` tests import it. A kernel's source
is the very string CuPy compiles; :data:`PRELUDE` turns ``__global__`` into a plain function
and ``threadIdx``/``blockIdx``/``blockDim``/``gridDim`` into globals, and each test's driver
loops over the grid.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

CXX = shutil.which("g++") or shutil.which("c++")

PRELUDE = r"""
struct gdsz_dim { long long x, y; };
static gdsz_dim threadIdx, blockIdx, blockDim;
static gdsz_dim gridDim __attribute__((unused));  // not every kernel reads it
#define __global__
#define __restrict__
"""


def compile_host(source: str, directory: Path, name: str,
                 flags: Sequence[str] = ()) -> ctypes.CDLL:
    """``PRELUDE + source`` built as a shared library in ``directory`` and loaded (skips the
    test without a C++ compiler; any compiler warning fails it)."""
    if CXX is None:
        pytest.skip("no C++ compiler")
    src = directory / f"{name}.cpp"
    src.write_text(PRELUDE + source)
    lib = directory / f"lib{name}.so"
    proc = subprocess.run([CXX, "-O1", *flags, "-shared", "-fPIC", "-Wall", "-Werror",
                           "-o", str(lib), str(src)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return ctypes.CDLL(str(lib))
