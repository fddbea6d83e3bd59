"""A user's script, not a test, runs on the emulated device: ``PYTHONPATH=tests/emulated_gpu``
is all it takes (issue 18, item 1). The script reads with gds_zarr and checks the result with
the CuPy calls users reach for: ``asnumpy``, ``.get()``, ``deviceSynchronize``, pinned memory,
a stream, a plain ``RawKernel``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.emulator

EMULATOR = Path(__file__).resolve().parents[1] / "tests" / "emulated_gpu"

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import cupy, cupyx, zarr
    import gds_zarr

    path = sys.argv[1]
    data = np.arange(200 * 300, dtype="float32").reshape(200, 300)
    z = zarr.create_array(zarr.storage.LocalStore(path), shape=data.shape, dtype=data.dtype,
                          chunks=(64, 64), shards=(128, 128), overwrite=True)
    z[...] = data

    with gds_zarr.enable(device="gpu") as on:
        assert on.device == "gpu", on
        z = zarr.open_array(gds_zarr.GDSStore(path, read_only=True), mode="r")
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            x = z[10:150, ::3]
            doubled = x * 2
        assert isinstance(x, cupy.ndarray)
        cupy.cuda.runtime.deviceSynchronize()
        pinned = cupyx.empty_pinned(x.shape, x.dtype)
        x.get(out=pinned, stream=stream)
        np.testing.assert_array_equal(pinned, data[10:150, ::3])
        np.testing.assert_array_equal(cupy.asnumpy(doubled), 2 * data[10:150, ::3])
        square = cupy.RawKernel(r'''
            extern "C" __global__ void square(float* v, long long n) {
                long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
                if (i < n) v[i] = v[i] * v[i];
            }''', "square")
        flat = cupy.ascontiguousarray(x).reshape(-1)
        square(((flat.size + 255) // 256,), (256,), (flat, np.int64(flat.size)))
        np.testing.assert_array_equal(flat.get(), (data[10:150, ::3] ** 2).reshape(-1))
    print("ok", cupy.__file__)
""")


def test_a_plain_script_runs_on_the_emulated_device(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(EMULATOR), os.environ.get("PYTHONPATH")) if p)}
    env.pop("GDS_ZARR_TEST_DEVICE", None)  # nothing test-specific: the path alone does it
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "a.zarr")], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok ") and str(EMULATOR) in done.stdout
