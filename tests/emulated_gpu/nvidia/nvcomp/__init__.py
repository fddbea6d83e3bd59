"""Emulated ``nvidia.nvcomp`` (nvCOMP 6 Python API) on the emulated CUDA device.

A stand-in for nvidia-nvcomp-cu12 6.0.0.12 in tests/emulated_gpu/ (first on ``PYTHONPATH``):
same names, signatures and errors (tests/test_emulated_api_nvcomp.py compares them with the
real wheel), decoding and encoding through host libraries, queued on the emulated device's
streams and checked against its allocations. What it does in each case, and why, is in
:mod:`nvidia.nvcomp.nvcomp_impl`'s docstring. ``nvidia`` stays a namespace package.
"""

from . import nvcomp_impl
from .nvcomp_impl import *  # noqa: F403 - the real package re-exports nvcomp_impl the same way
from .nvcomp_impl import __all__ as _impl_all

__version__ = nvcomp_impl.__version__
__cuda_version__ = nvcomp_impl.__cuda_version__
__emulated__ = True
__all__ = list(_impl_all)
