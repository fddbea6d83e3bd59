"""Benchmarks of gds_zarr against zarr-python, zarrs, tensorstore and GPU peers.

Run ``python -m benchmarks --help`` from the repository root; see benchmarks/README.md.
The package is not installed with gds_zarr; it is imported from the repository checkout.
"""

from __future__ import annotations

__all__: list[str] = []
