"""The readers the benchmark compares: one small class each.

A reader says whether it can run here (:meth:`Reader.availability`), sets up whatever global
configuration it needs only inside :meth:`Reader.session` (a context manager that restores zarr's
config on exit), opens a dataset once per case and reads selections from it. Imports happen
inside the methods: a reader whose library is missing or broken is reported, not fatal.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["READERS", "Reader", "make_reader"]

#: zarr's own pipeline, named explicitly so an environment default never changes a peer's run.
DEFAULT_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"
FUSED_PIPELINE = "zarr.core.codec_pipeline.FusedCodecPipeline"


class NotApplicable(Exception):
    """The reader cannot take part in this case (the report shows ``n/a: <message>``)."""


class Reader:
    """Base class: a named way of reading a Zarr array (or a store, for the store case).

    Parameters
    ----------
    device
        ``"cpu"`` or ``"gpu"``: the device of the run.
    """

    name: ClassVar[str] = ""
    #: Top-level modules that must be installed (``not installed`` otherwise).
    needs: ClassVar[tuple[str, ...]] = ("zarr",)
    #: How to install them, for the report.
    install: ClassVar[str] = ""
    #: Runs only when the device is a GPU (its output lives in device memory).
    gpu_only: ClassVar[bool] = False

    def __init__(self, device: str) -> None:
        self.device = device

    def availability(self) -> str | None:
        """None if the reader can run here, else why not (shown in the table)."""
        if self.gpu_only and self.device != "gpu":
            return "n/a: GPU reader (run with --device gpu)"
        for module in self.needs:
            if importlib.util.find_spec(module) is None:
                return f"not installed ({self.install or 'pip install ' + module})"
        try:
            self.check()
        except Exception as e:  # noqa: BLE001 - any import-time failure of an optional library
            return f"not available: {type(e).__name__}: {e}"
        return None

    def check(self) -> None:
        """Import what the reader needs; raise if it cannot run."""
        for module in self.needs:
            importlib.import_module(module)

    def session(self) -> contextlib.AbstractContextManager[Any]:
        """Configuration in force while a case is opened and read (restored on exit)."""
        import zarr

        return zarr.config.set({"codec_pipeline.path": DEFAULT_PIPELINE})

    def open(self, path: Path) -> Any:
        """Open the array at ``path`` for reading (once per case, not timed)."""
        raise NotImplementedError

    def read(self, handle: Any, selection: tuple[slice, ...]) -> Any:
        """Read ``selection``; the result is a NumPy or CuPy array."""
        return handle[selection]

    def read_many(self, handle: Any, selections: Sequence[tuple[slice, ...]]) -> Any:
        """Read every selection in one request where the reader has one (a sequence of
        arrays, or one stacked array); by default one :meth:`read` call each."""
        return [self.read(handle, s) for s in selections]

    def batches(self, handle: Any, selections: Sequence[tuple[slice, ...]],
                batch: int) -> Iterator[Any]:
        """An epoch of batches of ``batch`` windows, each one stacked array: by default a
        plain loop of :meth:`read_many` calls (no reading ahead)."""
        xp = _array_module(self.device)
        for i in range(0, len(selections), batch):
            yield xp.stack(self.read_many(handle, selections[i:i + batch]))

    def open_store(self, path: Path) -> Any:
        """A zarr Store over ``path`` for the store case; readers that are no store raise."""
        raise NotApplicable("the store case compares stores (gds_zarr and zarr only)")


class GDSZarrReader(Reader):
    """gds_zarr: ``zarr.open_array(GDSStore(path))`` after ``gds_zarr.enable(device=...)``."""

    name = "gds_zarr"
    needs = ("gds_zarr",)
    install = "pip install -e ."

    def check(self) -> None:
        import gds_zarr

        gds_zarr.GDSStore  # noqa: B018 - raises AttributeError while the store is unwritten
        gds_zarr.enable  # noqa: B018

    def session(self) -> contextlib.AbstractContextManager[Any]:
        import gds_zarr

        cm: contextlib.AbstractContextManager[Any] = gds_zarr.enable(device=self.device)
        return cm

    def open(self, path: Path) -> Any:
        import zarr

        import gds_zarr

        return zarr.open_array(gds_zarr.GDSStore(path, read_only=True), mode="r")

    def open_store(self, path: Path) -> Any:
        import gds_zarr

        return gds_zarr.GDSStore(path, read_only=True)

    def read_many(self, handle: Any, selections: Sequence[tuple[slice, ...]]) -> Any:
        import gds_zarr

        return gds_zarr.read_many(handle, list(selections), device=self.device)

    def batches(self, handle: Any, selections: Sequence[tuple[slice, ...]],
                batch: int) -> Iterator[Any]:
        import numpy as np

        import gds_zarr

        corners = np.array([[s.start for s in sel] for sel in selections], dtype=np.int64)
        window = tuple(s.stop - s.start for s in selections[0])
        with gds_zarr.WindowLoader(handle, window, starts=corners, batch_size=batch,
                                   device=self.device) as loader:
            yield from loader


class ZarrReader(Reader):
    """zarr-python's default pipeline on ``zarr.storage.LocalStore``."""

    name = "zarr"

    def open(self, path: Path) -> Any:
        import zarr

        return zarr.open_array(zarr.storage.LocalStore(path, read_only=True), mode="r")

    def open_store(self, path: Path) -> Any:
        import zarr

        return zarr.storage.LocalStore(path, read_only=True)


class FusedReader(ZarrReader):
    """zarr-python (>= 3.3) with its ``FusedCodecPipeline`` on ``LocalStore``."""

    name = "zarr_fused"
    install = "zarr >= 3.3 (Python >= 3.12)"

    def check(self) -> None:
        from zarr.core.codec_pipeline import FusedCodecPipeline  # noqa: F401 - zarr >= 3.3

    def session(self) -> contextlib.AbstractContextManager[Any]:
        import zarr

        return zarr.config.set({"codec_pipeline.path": FUSED_PIPELINE})

    def open_store(self, path: Path) -> Any:
        raise NotApplicable("the store case compares stores (gds_zarr and zarr only)")


class ZarrsReader(ZarrReader):
    """zarr-python with the zarrs Rust pipeline (``zarrs.ZarrsCodecPipeline``).

    ``codec_pipeline.strict`` is on: zarrs otherwise falls back silently to zarr's Python
    pipeline for what it does not support, and the table would credit zarrs with zarr's time.
    """

    name = "zarrs"
    needs = ("zarr", "zarrs")
    install = "pip install zarrs"

    def session(self) -> contextlib.AbstractContextManager[Any]:
        import zarr

        return zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline",
                                "codec_pipeline.strict": True})

    def open_store(self, path: Path) -> Any:
        raise NotApplicable("the store case compares stores (gds_zarr and zarr only)")


class TensorstoreReader(Reader):
    """tensorstore's own API: ``ts.open(spec).result()[selection].read().result()``."""

    name = "tensorstore"
    needs = ("tensorstore",)
    install = "pip install tensorstore"

    def session(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def open(self, path: Path) -> Any:
        import tensorstore as ts

        driver = "zarr3" if (path / "zarr.json").exists() else "zarr"
        spec = {"driver": driver, "kvstore": {"driver": "file", "path": str(path)}}
        return ts.open(spec, open=True, read=True).result()

    def read(self, handle: Any, selection: tuple[slice, ...]) -> Any:
        return handle[selection].read().result()

    def read_many(self, handle: Any, selections: Sequence[tuple[slice, ...]]) -> Any:
        # Every read issued before any is awaited: tensorstore runs them concurrently.
        futures = [handle[s].read() for s in selections]
        return [f.result() for f in futures]


class ZarrGPUReader(ZarrReader):
    """zarr-python with ``zarr.config.enable_gpu()`` (host decode, CuPy output)."""

    name = "zarr_gpu"
    needs = ("zarr", "cupy")
    install = "pip install cupy-cuda12x"
    gpu_only = True

    def session(self) -> contextlib.AbstractContextManager[Any]:
        return _zarr_gpu_config()

    def open_store(self, path: Path) -> Any:
        raise NotApplicable("the store case compares stores (gds_zarr and zarr only)")


class KvikioReader(Reader):
    """kvikio's ``kvikio.zarr.GDSStore`` with ``zarr.config.enable_gpu()``."""

    name = "kvikio"
    needs = ("zarr", "cupy", "kvikio")
    install = "pip install kvikio-cu12"
    gpu_only = True

    def check(self) -> None:
        importlib.import_module("kvikio.zarr")

    def session(self) -> contextlib.AbstractContextManager[Any]:
        return _zarr_gpu_config()

    def open(self, path: Path) -> Any:
        import zarr
        from kvikio.zarr import GDSStore

        return zarr.open_array(GDSStore(root=str(path), read_only=True), mode="r")


class CzarrReader(Reader):
    """czarr's explicit API (cuFile + nvCOMP): ``czarr.core.Array.open(path)[selection]``."""

    name = "czarr"
    needs = ("czarr", "cupy")
    install = "pip install 'czarr[cu12]'"
    gpu_only = True

    def check(self) -> None:
        importlib.import_module("czarr.core")

    def session(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def open(self, path: Path) -> Any:
        from czarr.core import Array

        return Array.open(str(path))


class TensorstoreCupyReader(TensorstoreReader):
    """tensorstore reads to host memory, then ``cupy.asarray`` copies to the device."""

    name = "tensorstore_cupy"
    needs = ("tensorstore", "cupy")
    gpu_only = True

    def read(self, handle: Any, selection: tuple[slice, ...]) -> Any:
        import cupy

        return cupy.asarray(handle[selection].read().result())

    def read_many(self, handle: Any, selections: Sequence[tuple[slice, ...]]) -> Any:
        import cupy

        return [cupy.asarray(a) for a in super().read_many(handle, selections)]


def _array_module(device: str) -> Any:
    if device == "gpu":
        import cupy

        return cupy
    import numpy

    return numpy


@contextlib.contextmanager
def _zarr_gpu_config() -> Iterator[None]:
    import zarr

    with zarr.config.set({"codec_pipeline.path": DEFAULT_PIPELINE}), zarr.config.enable_gpu():
        yield


#: Every reader, in report order (gds_zarr first: the ratios are relative to it).
READERS: dict[str, type[Reader]] = {
    r.name: r
    for r in (GDSZarrReader, ZarrReader, FusedReader, ZarrsReader, TensorstoreReader,
              ZarrGPUReader,
              KvikioReader, CzarrReader, TensorstoreCupyReader)
}


def make_reader(name: str, device: str) -> Reader:
    """The reader called ``name`` for a run on ``device``.

    Raises
    ------
    ValueError
        For an unknown reader name.
    """
    try:
        return READERS[name](device)
    except KeyError:
        raise ValueError(f"unknown reader {name!r}; known: {', '.join(READERS)}") from None
