"""``cupy.cuda.driver`` of the emulated device (errors only)."""

from __future__ import annotations

__all__ = ["CUDADriverError"]


class CUDADriverError(RuntimeError):
    """A CUDA driver API error (``status``: the CUresult value)."""

    def __init__(self, status: int, msg: str = "") -> None:
        self.status = int(status)
        super().__init__(msg or f"CUDA driver error {status}")
