"""gds_zarr: read Zarr arrays straight into GPU memory, with a complete CPU path.

Importing gds_zarr never needs a GPU, CUDA, CuPy, kvikio or nvCOMP: those are imported only
when the GPU path is chosen. Importing it registers :class:`GDSCodecPipeline` with zarr.
"""

from __future__ import annotations

from gds_zarr import errors, settings
from gds_zarr._device import resolve_device
from gds_zarr._info import info
from gds_zarr.loader import WindowLoader
from gds_zarr.pipeline import GDSCodecPipeline, enable
from gds_zarr.store import GDSStore
from gds_zarr.windows import aread_many, read_many

__version__ = "0.1.0"

__all__ = [
    "GDSCodecPipeline",
    "GDSStore",
    "WindowLoader",
    "__version__",
    "aread_many",
    "enable",
    "errors",
    "info",
    "read_many",
    "resolve_device",
    "settings",
]
