"""Multi-GPU with dask_cuda.LocalCUDACluster: one worker per GPU, each reading onto its own device.

Skips cleanly without a usable GPU (gds_zarr._device.gpu_status) or without dask_cuda. A
single-GPU machine runs it with one worker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from gds_zarr._device import gpu_status

pytestmark = pytest.mark.gpu

if not gpu_status().usable:
    pytest.skip(f"no usable GPU: {gpu_status().reason}", allow_module_level=True)
dask_cuda = pytest.importorskip("dask_cuda", reason="dask_cuda is not installed")
distributed = pytest.importorskip("distributed")
cupy = pytest.importorskip("cupy")
da = pytest.importorskip("dask.array")

import gds_zarr.dask
from gds_zarr.pipeline import PIPELINE_PATH, enable
from gds_zarr.store import GDSStore

SHAPE, CHUNKS, SHARDS = (2048, 1024), (64, 64), (512, 1024)


@pytest.fixture(scope="module")
def array_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dask_cuda") / "a.zarr"
    z = zarr.create_array(path, shape=SHAPE, dtype="f4", chunks=CHUNKS, shards=SHARDS,
                          compressors=zarr.codecs.ZstdCodec(level=1))
    z[...] = np.arange(np.prod(SHAPE), dtype="f4").reshape(SHAPE) % 1000
    return path


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    n = cupy.cuda.runtime.getDeviceCount()
    with (
        dask_cuda.LocalCUDACluster(n_workers=n, threads_per_worker=1,
                                   dashboard_address=":0") as cluster,  # any free port
        distributed.Client(cluster) as c,
    ):
        c.wait_for_workers(n, timeout=120)
        gds_zarr.dask.enable_on_workers(c, device="gpu")
        yield c


def _read_rows(path: str, rows: tuple[int, int]) -> dict[str, Any]:
    import cupy as cp

    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    block = z[rows[0]:rows[1]]
    device_id = int(block.device.id)
    return {
        "module": type(block).__module__.split(".")[0],
        "device_id": device_id,
        "pci_bus_id": cp.cuda.Device(device_id).pci_bus_id,
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "sum": float(block.sum(dtype="f8")),
    }


def test_one_worker_per_gpu_with_gds_zarr_enabled(client: Any) -> None:
    reports = client.run(gds_zarr.dask.worker_report)
    assert len(reports) == cupy.cuda.runtime.getDeviceCount()
    for report in reports.values():
        assert report["codec_pipeline"] == PIPELINE_PATH
        assert report["buffer"] == "zarr.buffer.gpu.Buffer"
        assert report["settings"]["device"] == "gpu"


def test_each_worker_reads_its_chunks_onto_its_own_gpu(client: Any, array_path: Path) -> None:
    expected = np.asarray(zarr.open_array(array_path, mode="r")[...], dtype="f8")
    workers = sorted(client.scheduler_info()["workers"])
    step = SHAPE[0] // len(workers)
    futures = [client.submit(_read_rows, str(array_path), (i * step, (i + 1) * step),
                             workers=[w], allow_other_workers=False, pure=False)
               for i, w in enumerate(workers)]
    distributed.wait(futures, timeout=120)  # a worker that cannot answer: fail, not hang
    results = client.gather(futures)
    assert {r["module"] for r in results} == {"cupy"}
    # LocalCUDACluster gives each worker its own GPU first in CUDA_VISIBLE_DEVICES: device 0
    # inside the worker, a different physical GPU (PCI bus id) for every worker.
    assert {r["device_id"] for r in results} == {0}
    assert len({r["pci_bus_id"] for r in results}) == len(workers)
    assert len({r["visible"].split(",")[0] for r in results}) == len(workers)
    for i, r in enumerate(results):
        assert r["sum"] == expected[i * step:(i + 1) * step].sum()


def test_from_zarr_on_the_cluster(client: Any, array_path: Path) -> None:
    with enable(device="gpu"):
        z = zarr.open_array(GDSStore(array_path, read_only=True), mode="r")
    x = da.from_zarr(z, chunks=SHARDS)
    # Through a future with a timeout: CuPy results that cannot be sent between workers (no
    # numba-cuda or rmm for distributed's serializer) must fail the test, not hang it.
    total = client.compute(x.sum(dtype="f8")).result(timeout=120)
    expected = np.asarray(zarr.open_array(array_path, mode="r")[...], dtype="f8").sum()
    assert float(total) == expected
