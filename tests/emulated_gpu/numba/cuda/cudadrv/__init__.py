"""``numba.cuda.cudadrv`` of the emulated device: ``devicearray`` and ``driver``."""

from numba.cuda.cudadrv import devicearray, driver

__all__ = ["devicearray", "driver"]
