"""``cupy.cuda.driver`` (``cupy_backends.cuda.api.driver``) of the emulated device: its error,
which the kernel runner raises (CuPy launches kernels through the driver API)."""

from __future__ import annotations

from _emucuda.kernels import CUDADriverError

__all__ = ["CUDADriverError"]
