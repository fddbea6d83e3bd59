"""The per-read GPU context (pipeline/_gpuread.py), checked without a GPU: it follows a read
into worker threads, never leaks into a concurrent read, and picks the GPU budget costs."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gds_zarr.decode._base import BytesStep
from gds_zarr.pipeline import _gpuread as gpuread
from gds_zarr.pipeline._storeio import _read_batch
from gds_zarr.planning.staging import PAYLOADS, current_payload, unit_staging_bytes


class _Decoder:
    def __init__(self, device: str) -> None:
        self.device = device


async def test_context_follows_the_read_into_threads_and_not_elsewhere() -> None:
    seen: dict[str, object] = {}

    async def read(name: str, target: object) -> None:
        with gpuread.gpu_read(target) as r:
            await asyncio.sleep(0.01)  # the other read runs meanwhile
            seen[name] = await asyncio.to_thread(lambda: gpuread.target())
            kw = gpuread.decode_kwargs(_Decoder("gpu"))
            assert kw == {"target": target, "read_id": r.read_id}
            assert gpuread.decode_kwargs(_Decoder("cpu")) == {}

    a, b = object(), object()
    await asyncio.gather(read("a", a), read("b", b))
    assert seen == {"a": a, "b": b}
    assert gpuread.current() is None  # nothing left behind
    with gpuread.on_target():  # no read: a no-op that needs no CuPy
        pass


def test_batch_costs() -> None:
    enc = np.array([1000, 5000, 70000], np.int64)
    zstd = (BytesStep("zstd", None, "zstd"),)
    np.testing.assert_array_equal(gpuread.batch_costs(zstd, enc, 65536, "cpu"), enc + 65536)
    np.testing.assert_array_equal(gpuread.batch_costs(zstd, enc, 65536, "gpu"),
                                  unit_staging_bytes(enc, 65536, steps=1))
    raw = (BytesStep("crc32c", None, "crc32c"),)
    np.testing.assert_array_equal(gpuread.batch_costs(raw, enc, 65536, "gpu"),
                                  unit_staging_bytes(enc, 65536, steps=0))
    assert (gpuread.batch_costs(zstd, enc, 65536, "gpu") >= enc + 65536).all()


def test_read_payload_is_the_chains_on_the_gpu_only() -> None:
    zlib = (BytesStep("crc32c", None, "crc32c"), BytesStep("zlib", None, "zlib"))
    assert gpuread.read_payload(zlib, "gpu") == PAYLOADS["zlib"]
    assert gpuread.read_payload(zlib, "cpu") is None
    assert gpuread.read_payload((BytesStep("blosc", None, "blosc"),), "gpu") is None


def test_gpu_store_reads_are_laid_out_for_the_payload() -> None:
    """The payload reaches the I/O backend (through the store, which has no argument for it)
    around a GPU read only."""
    seen: list[object] = []

    class Store:
        def read_batch(self, *args: object, **kwargs: object) -> None:
            seen.append(current_payload())

    args = (Store(), ["k"], np.zeros(1, np.int64), np.full(1, -1, np.int64))
    _read_batch(*args, "gpu", None, PAYLOADS["zlib"])
    _read_batch(*args, "cpu", None, PAYLOADS["zlib"])
    assert seen == [PAYLOADS["zlib"], None] and current_payload() is None


def test_dma_min_without_kvikio(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from gds_zarr.io import _gpu as kvikio_backend

    monkeypatch.setitem(sys.modules, "kvikio", None)
    monkeypatch.setitem(sys.modules, "kvikio.defaults", None)
    assert kvikio_backend._dma_min() == 0  # unknown: every read stays on its page
