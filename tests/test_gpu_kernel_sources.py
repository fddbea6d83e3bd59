"""The CUDA sources of the CuPy RawKernels compile, checked here without a GPU.

CuPy compiles them with NVRTC at first use on a GPU machine; a syntax or type error would only
show there. Where the CUDA toolkit's nvcc is installed, compile each source for sm_90 here.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gds_zarr.decode import _blosc_gpu, _filters_gpu, _gpu, _scatter_gpu

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) not installed")


def _sources() -> dict[str, str]:
    out = {"decode_kernels": _gpu._KERNELS, "blosc_unshuffle": _blosc_gpu.UNSHUFFLE_KERNEL,
           "hdf5_filters": _filters_gpu.FILTER_KERNELS}
    for itemsize, ctype in _scatter_gpu._ITEM_TYPES.items():
        out[f"scatter_item{itemsize}"] = _scatter_gpu._KERNEL.replace("ITEM", ctype)
    return out


@pytest.mark.parametrize("name", sorted(_sources()))
def test_kernel_source_compiles(name: str, tmp_path: Path) -> None:
    src = tmp_path / f"{name}.cu"
    src.write_text(_sources()[name])
    proc = subprocess.run(
        [str(NVCC), "-c", "-arch=sm_90", "-Werror=all-warnings", "-o", str(tmp_path / "k.o"),
         str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
