"""Emulator-only knobs and records of the emulated kvikio (not part of kvikio's API).

* :func:`set_gds`: give the emulated machine GDS (or take it away) without the
  ``EMULATED_GPU_GDS`` environment variable; the cuFile driver properties are read again.
* :func:`records` / :func:`clear_records`: each I/O task as it ran, with its route
  (``host``, ``bounce``, ``dma``, ``dma_unaligned``, ``http``): tests check that reads meant
  for DMA really were page-aligned, and that nothing ran before its future was waited on.
* :func:`reset_defaults`: forget ``kvikio.defaults`` so the ``KVIKIO_*`` environment is read
  again on next use (a real process reads it once).
"""

from __future__ import annotations

import sys

from ._lib import _common
from ._lib._common import GDS_ENV, CUDADriverError, DeviceFault, IORecord, clear_records, records
from ._lib.defaults import reset as reset_defaults

__all__ = ["GDS_ENV", "CUDADriverError", "DeviceFault", "IORecord", "clear_records",
           "gds_available", "records", "reset_defaults", "set_gds"]


def gds_available() -> bool:
    """Whether the emulated machine has GDS now."""
    return _common.gds_available()


def set_gds(value: bool | None) -> None:
    """Force GDS on (True) or off (False); None: follow ``EMULATED_GPU_GDS`` again."""
    _common.set_gds(value)
    # kvikio.cufile_driver.properties caches the driver's answer; read it again (if loaded:
    # importing it here would bind kvikio.cufile_driver, which kvikio leaves to the caller).
    drv = sys.modules.get(f"{__package__}.cufile_driver")
    if drv is not None:
        drv.properties._reset()
