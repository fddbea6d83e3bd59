"""dask.array.from_zarr over a GDSStore: threaded scheduler and a multi-process cluster."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

da = pytest.importorskip("dask.array")

import dask

from gds_zarr.pipeline import PIPELINE_PATH, enable, stats
from gds_zarr.store import GDSStore

SHAPE, CHUNKS = (256, 192), (32, 64)  # 8 x 3 = 24 chunks


@pytest.fixture(scope="module")
def array_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dask") / "a.zarr"
    a = zarr.create_array(path, shape=SHAPE, dtype="f4", chunks=CHUNKS,
                          compressors=zarr.codecs.ZstdCodec(level=1))
    a[...] = np.arange(np.prod(SHAPE), dtype="f4").reshape(SHAPE)
    return path


def _expected(path: Path) -> np.ndarray:
    with zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
        return np.asarray(zarr.open_array(zarr.storage.LocalStore(path), mode="r")[...])


def test_threaded_scheduler_reads_through_the_gds_pipeline(array_path: Path) -> None:
    expected = _expected(array_path)
    with enable(device="cpu"):
        z = zarr.open_array(GDSStore(array_path, read_only=True), mode="r")
        assert type(z._async_array.codec_pipeline).__name__ == "GDSCodecPipeline"
        x = da.from_zarr(z)
        assert x.chunks == ((32,) * 8, (64,) * 3)
        before = stats.chunks_decoded
        with dask.config.set(scheduler="threads", num_workers=2):
            got = x.compute()
            total = x.sum(dtype="f8").compute()
        decoded = stats.chunks_decoded - before
    assert np.array_equal(got, expected)
    assert total == expected.sum(dtype="f8")
    assert decoded == 2 * 24  # every chunk, twice, by gds_zarr's fast path


def test_zarr_array_over_gdsstore_pickles(array_path: Path) -> None:
    with enable(device="cpu"):
        z = zarr.open_array(GDSStore(array_path, read_only=True), mode="r")
        z2 = pickle.loads(pickle.dumps(z))
        assert z2.store == z.store and z2.store.read_only
        assert type(z2._async_array.codec_pipeline).__name__ == "GDSCodecPipeline"
        assert np.array_equal(z2[:5], z[:5])


# --- distributed -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                 dashboard_address=None) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _decode_counts() -> int:
    from gds_zarr.pipeline import stats as worker_stats

    return worker_stats.chunks_decoded


def test_plugin_applies_pipeline_and_settings_in_every_worker(client: Any, array_path: Path
                                                               ) -> None:
    import gds_zarr.dask

    gds_zarr.dask.enable_on_workers(client, device="cpu", decode_threads=1,
                                    memory_budget="64MiB")
    reports = client.run(gds_zarr.dask.worker_report)
    assert len(reports) == 2
    for report in reports.values():
        assert report["codec_pipeline"] == PIPELINE_PATH
        assert report["settings"]["device"] == "cpu"
        assert report["settings"]["decode_threads"] == 1
        assert report["settings"]["memory_budget"] == 64 << 20
    # Not this process: the plugin changed the workers only.
    assert zarr.config.get("codec_pipeline.path") != PIPELINE_PATH
    assert len({r["pid"] for r in reports.values()}) == 2

    # Tasks that open the array in the worker: only the worker's own config decides the path.
    rows = [(i, i + 64) for i in range(0, SHAPE[0], 64)]
    futures = client.map(_read_rows, [str(array_path)] * len(rows), rows, pure=False)
    results = client.gather(futures)
    got = np.concatenate([block for block, _ in results])
    assert np.array_equal(got, _expected(array_path))
    assert {name for _, name in results} == {"GDSCodecPipeline"}
    assert sum(client.run(_decode_counts).values()) >= 24  # decoded by gds_zarr in the workers


def _read_rows(path: str, rows: tuple[int, int]) -> tuple[np.ndarray, str]:
    z = zarr.open_array(GDSStore(path, read_only=True), mode="r")
    return np.asarray(z[rows[0]:rows[1]]), type(z._async_array.codec_pipeline).__name__


def test_distributed_reads_a_pickled_gdsstore_array(client: Any, array_path: Path) -> None:
    import gds_zarr.dask

    gds_zarr.dask.enable_on_workers(client, device="cpu")
    with enable(device="cpu"):
        z = zarr.open_array(GDSStore(array_path, read_only=True), mode="r")
    x = da.from_zarr(z)

    def pipeline_in_worker(block: np.ndarray, z: Any = z) -> np.ndarray:
        # Runs in the worker, on the unpickled array: its store and pipeline classes.
        name = f"{type(z.store).__name__}/{type(z._async_array.codec_pipeline).__name__}"
        return np.array([[name]], dtype=object)

    names = set(x.map_blocks(pipeline_in_worker, dtype=object, chunks=(1, 1))
                .compute(scheduler=client).ravel())
    assert names == {"GDSStore/GDSCodecPipeline"}
    before = sum(client.run(_decode_counts).values())
    assert float(x.sum(dtype="f8").compute(scheduler=client)) == float(
        _expected(array_path).sum(dtype="f8"))
    # >= : distributed may run a task twice (e.g. a worker briefly considered lost)
    assert sum(client.run(_decode_counts).values()) - before >= 24


def test_plugin_rejects_bad_settings_in_the_client() -> None:
    pytest.importorskip("distributed")
    import gds_zarr.dask

    with pytest.raises(KeyError, match="no_such_setting"):
        gds_zarr.dask.GDSZarrPlugin("cpu", no_such_setting=1)
    with pytest.raises(ValueError, match="device"):
        gds_zarr.dask.GDSZarrPlugin("tpu")
    plugin = pickle.loads(pickle.dumps(gds_zarr.dask.GDSZarrPlugin("cpu", io_threads=3)))
    assert (plugin.device, plugin.settings) == ("cpu", {"io_threads": 3})
