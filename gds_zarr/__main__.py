"""``python -m gds_zarr``: the ``gds-zarr`` command (see :mod:`gds_zarr.cli`)."""

from __future__ import annotations

import sys

from gds_zarr.cli import main

if __name__ == "__main__":
    sys.exit(main())
