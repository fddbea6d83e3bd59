"""The optional C kernels of gds_zarr; everything else about the build is in pyproject.toml.

``gds_zarr/decode/_blosc_native.c`` (Blosc unshuffle and the CPU twin's chunk decoder) is built
as an extension module but loaded with ctypes, so it needs a C compiler and no Python headers.
It is optional: where it does not build, the install still succeeds and gds_zarr runs the numpy
twin of the same code (``python -m gds_zarr info`` says which one is in use).
"""

import sys

from setuptools import Extension, setup

# -O3 and no -march: a wheel must run on any x86-64 (SSE2); AVX2 is chosen at run time.
FLAGS = [] if sys.platform == "win32" else ["-O3", "-std=gnu11"]

setup(ext_modules=[Extension("gds_zarr.decode._blosc_native_lib",
                             ["gds_zarr/decode/_blosc_native.c"],
                             extra_compile_args=FLAGS, optional=True)])
