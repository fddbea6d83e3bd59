"""gds_zarr: read Zarr arrays straight into GPU memory, with a complete CPU path.

Importing gds_zarr never needs a GPU, CUDA, CuPy, kvikio or nvCOMP.
"""

from __future__ import annotations

from gds_zarr import errors, settings
from gds_zarr._device import resolve_device

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "errors",
    "resolve_device",
    "settings",
]
