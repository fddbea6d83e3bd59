"""``gds-zarr demo``: write a sample array, read it back through gds_zarr, check, time.

The demo writes two small arrays with zarr itself (chunked, and the same data sharded), reads
each back through :class:`gds_zarr.GDSStore` inside ``gds_zarr.enable(device=...)``, compares
the values with what zarr's default pipeline returns, and prints the device, I/O path and
decoder used and the throughput. Any mismatch makes the exit status 1.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = ["DemoRead", "Reader", "parse_shape", "read_with_gds", "run_demo", "write_sample"]

DEFAULT_SHAPE = (2048, 2048)
DEFAULT_CHUNK = 64
SHARD_FACTOR = 8  # a shard holds SHARD_FACTOR chunks per dimension
# The reference: zarr's default pipeline, whatever gds_zarr.enable() set globally.
_ZARR_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"


@dataclass(frozen=True, slots=True)
class DemoRead:
    """One timed read of a whole array.

    Attributes
    ----------
    values
        The array read, as numpy (a CuPy result is copied to the host for the check).
    seconds
        Wall time of the fastest read.
    first_seconds
        Wall time of the first read (includes one-time setup: imports, handles, kernels).
    output_type
        Where the read landed, e.g. ``"numpy.ndarray"`` or ``"cupy.ndarray"``.
    pipeline
        The zarr codec pipeline in effect (``codec_pipeline.path``).
    notes
        What the pipeline and the store counted (which path ran, reads issued).
    """

    values: np.ndarray
    seconds: float
    first_seconds: float
    output_type: str
    pipeline: str
    notes: tuple[str, ...] = ()


#: Reads the array at a path on a device ("cpu"/"gpu") ``repeat`` times.
Reader = Callable[[Path, Literal["cpu", "gpu"], int], DemoRead]


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"2048x2048"`` or ``"512,512,16"`` into a shape.

    Raises
    ------
    ValueError
        If a dimension is not a positive integer.
    """
    parts = [p for p in text.replace(",", "x").lower().split("x") if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"cannot parse shape {text!r}; expected e.g. 2048x2048") from None
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"shape {text!r} must have positive dimensions, e.g. 2048x2048")
    return shape


def sample_data(shape: Sequence[int]) -> np.ndarray:
    """Deterministic float32 data that compresses about as well as real measurements."""
    rng = np.random.default_rng(0)
    smooth = np.indices(shape, dtype=np.float32).sum(axis=0) / 64
    return (np.sin(smooth) * 100 + rng.integers(0, 16, size=shape)).astype(np.float32)


def write_sample(root: Path, data: np.ndarray, *, sharded: bool, chunk: int = DEFAULT_CHUNK
                 ) -> Path:
    """Write ``data`` as a zstd-compressed zarr v3 array under ``root`` with zarr itself.

    Parameters
    ----------
    root
        Directory to create the array in (as ``chunked.zarr`` or ``sharded.zarr``).
    data
        The values.
    sharded
        Store chunks inside shards of ``SHARD_FACTOR`` chunks per dimension.
    chunk
        Chunk edge length, the same in every dimension (clamped to the shape).

    Returns
    -------
    Path
        The array's directory.
    """
    import zarr
    from zarr.codecs import ZstdCodec

    chunks = tuple(min(chunk, n) for n in data.shape)
    path = root / ("sharded.zarr" if sharded else "chunked.zarr")
    shards = None
    if sharded:
        # A shard must be a whole number of chunks; no larger than the array needs.
        shards = tuple(c * min(SHARD_FACTOR, math.ceil(n / c))
                       for c, n in zip(chunks, data.shape, strict=True))
    arr = zarr.create_array(store=str(path), shape=data.shape, dtype=data.dtype, chunks=chunks,
                            shards=shards, compressors=ZstdCodec(level=3), overwrite=True)
    arr[...] = data
    return path


def _to_numpy(values: Any) -> np.ndarray:
    get = getattr(values, "get", None)  # CuPy: copy to the host
    return np.asarray(get() if callable(get) and not isinstance(values, np.ndarray) else values)


def _timed_reads(read: Callable[[], Any], repeat: int) -> tuple[Any, float, float]:
    times: list[float] = []
    out: Any = None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = read()
        sync = getattr(getattr(out, "device", None), "synchronize", None)
        if callable(sync):  # CuPy work is asynchronous: time until it is done
            sync()
        times.append(time.perf_counter() - t0)
    return out, min(times), times[0]


def read_with_gds(path: Path, device: Literal["cpu", "gpu"], repeat: int) -> DemoRead:
    """Read the whole array at ``path`` through GDSStore inside ``gds_zarr.enable``.

    The pipeline's and the store's counters say which path really ran: gds_zarr's batched
    path, or zarr's pipeline it delegated to (and why).
    """
    import zarr

    from gds_zarr.pipeline import enable, stats
    from gds_zarr.store import GDSStore

    stats.reset()
    with enable(device=device):
        store = GDSStore(str(path), read_only=True)
        arr = zarr.open_array(store, mode="r")
        out, best, first = _timed_reads(lambda: arr[...], repeat)
        pipeline = str(zarr.config.get("codec_pipeline.path"))
    notes = [(f"pipeline: {stats.fast_reads} batched read(s), {stats.store_reads} store "
             f"read(s), {stats.chunks_decoded} chunks decoded, peak staging "
             f"{stats.peak_staging_bytes / 1e6:.1f} MB")]
    if stats.delegated_reads:
        notes.append(f"delegated to zarr's pipeline {stats.delegated_reads} time(s): "
                     f"{stats.last_delegation}")
    io = store.io_stats(device)
    notes.append(f"{device} io: {io.requests} ranges in {io.reads} read(s) from "
                 f"{io.files_opened} file(s), {io.bytes_read / 1e6:.1f} MB")
    kind = f"{type(out).__module__.split('.')[0]}.{type(out).__name__}"
    return DemoRead(_to_numpy(out), best, first, kind, pipeline, tuple(notes))


def read_with_zarr(path: Path, device: Literal["cpu", "gpu"], repeat: int) -> DemoRead:
    """Read the whole array at ``path`` with zarr's default pipeline (host memory)."""
    import zarr

    arr = zarr.open_array(str(path), mode="r")
    out, best, first = _timed_reads(lambda: arr[...], repeat)
    return DemoRead(np.asarray(out), best, first, "numpy.ndarray",
                    str(zarr.config.get("codec_pipeline.path")))


def _decoder(device: str) -> str:
    from gds_zarr import settings
    from gds_zarr.decode import _zstd_native

    if device == "gpu":
        return "nvCOMP Zstd (batched, on the GPU)"
    library = "libzstd (a context per thread)" if _zstd_native.available() else "numcodecs Zstd"
    return f"{library} in {settings.get('decode_threads')} thread(s)"


def _io_path(device: str) -> str:
    from gds_zarr._info import _io_path as io_path
    from gds_zarr._info import _kvikio_info

    # Only the GPU path needs kvikio's view (GDS or compat); never import it for the CPU.
    return io_path(device, _kvikio_info()) if device == "gpu" else io_path(device, None)


def _stored_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_demo(device: str | None = None, shape: Sequence[int] = DEFAULT_SHAPE,
             keep: Path | None = None, repeat: int = 3, *,
             reader: Reader = read_with_gds, echo: Callable[[str], None] = print) -> int:
    """Write the sample arrays, read them back through ``reader``, check and report.

    Parameters
    ----------
    device
        ``"auto"``, ``"gpu"`` or ``"cpu"``; None means the ``device`` setting.
    shape
        Shape of the sample array (float32, chunks of 64 per dimension).
    keep
        Write the arrays into this directory and keep them; default: a temporary directory.
    repeat
        Reads per array; the fastest is reported.
    reader
        How to read (default: GDSStore inside ``gds_zarr.enable``); tests pass others.
    echo
        Where lines of the report go.

    Returns
    -------
    int
        0 when every array read back equal to zarr's own result, 1 on a mismatch.

    Raises
    ------
    gds_zarr.errors.DeviceUnavailableError
        If ``"gpu"`` is asked for and is not usable.
    """
    import zarr

    from gds_zarr._device import explain_device
    from gds_zarr.errors import DeviceUnavailableError

    choice = explain_device(device)
    if choice.error is not None:
        raise DeviceUnavailableError(choice.error)
    resolved = choice.device
    echo(f"device: {choice.requested} -> {resolved} ({choice.reason})")
    echo(f"io path: {_io_path(resolved)}")
    echo(f"decoder: {_decoder(resolved)}")
    data = sample_data(shape)
    root = Path(keep) if keep is not None else Path(tempfile.mkdtemp(prefix="gds-zarr-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    status = 0
    try:
        for sharded in (False, True):
            path = write_sample(root, data, sharded=sharded)
            with zarr.config.set({"codec_pipeline.path": _ZARR_PIPELINE}):
                expected = np.asarray(zarr.open_array(str(path), mode="r")[...])
            got = reader(path, resolved, repeat)
            arr = zarr.open_array(str(path), mode="r")
            nchunks = math.prod(math.ceil(n / c)
                                for n, c in zip(arr.shape, arr.chunks, strict=True))
            same = (got.values.shape == expected.shape and got.values.dtype == expected.dtype
                    and np.array_equal(got.values, expected) and np.array_equal(expected, data))
            status |= 0 if same else 1
            layout = f"shards {arr.shards}, " if sharded and arr.shards else ""
            echo(f"{path.name}: {arr.shape} {arr.dtype}, {layout}chunks {arr.chunks}, "
                 f"{nchunks} chunks, {_stored_bytes(path) / 1e6:.1f} MB on disk")
            echo(f"  read into {got.output_type} via {got.pipeline}: "
                 f"{data.nbytes / got.seconds / 1e9:.2f} GB/s decoded, "
                 f"{nchunks / got.seconds:,.0f} chunks/s (best of {max(1, repeat)}: "
                 f"{got.seconds * 1e3:.1f} ms; first read {got.first_seconds * 1e3:.1f} ms)")
            if got.notes:
                echo(f"  counted over {max(1, repeat)} read(s):")
            for note in got.notes:
                echo(f"    {note}")
            echo(f"  values: {'match zarr' if same else 'MISMATCH with zarr'}")
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            echo(f"kept: {root}")
    echo("ok" if status == 0 else "FAILED: values differ from zarr's")
    return status
