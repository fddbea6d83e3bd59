"""Arrays and selections shared by the CPU pipeline matrix (tests/test_pipeline_matrix.py) and
its GPU twin (tests_gpu/test_pipeline_gpu.py), so both suites run the very same cases.

Not a test module (no ``test_`` prefix); tests_gpu/conftest.py puts tests/ on ``sys.path``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"
"""zarr's own pipeline: the reference every result is compared with."""

Select = Callable[[Any], Any]


def numcodecs_codec(name: str, **kw: Any) -> Any:
    """A numcodecs codec wrapped for zarr v3 (``zarr.codecs.numcodecs.<name>``)."""
    import zarr.codecs.numcodecs as zn

    return getattr(zn, name)(**kw)


def make(path: str, data: np.ndarray, *, chunks: Any, write: Any = None, **kw: Any) -> None:
    """Create an array with zarr's default pipeline and write ``data`` (or part of it)."""
    with warnings.catch_warnings(), zarr.config.set({"codec_pipeline.path": DEFAULT}):
        warnings.simplefilter("ignore")
        z = zarr.create_array(LocalStore(path), shape=data.shape, dtype=data.dtype,
                              chunks=chunks, overwrite=True, **kw)
        sel = write if write is not None else (slice(None),) * data.ndim
        z[sel] = data[sel]


def v2_compressor(name: str | None) -> Any:
    """The numcodecs compressor of a zarr v2 matrix case: "blosc", "zlib", "zstd" or None."""
    import numcodecs

    return {"blosc": numcodecs.Blosc(cname="lz4", shuffle=numcodecs.Blosc.BITSHUFFLE),
            "zlib": numcodecs.Zlib(level=3), "zstd": numcodecs.Zstd(level=2),
            None: None}[name]


def budget_array(path: str, sharded: bool) -> np.ndarray:
    """Write the memory-budget tests' array at ``path`` and return its data: 8 MiB of float32,
    64x64 chunks, zstd, in 256x512 shards if ``sharded``."""
    import zarr.codecs as zc

    data = np.random.default_rng(0).standard_normal((1024, 2048)).astype("f4")
    kw: dict[str, Any] = {"shards": (256, 512)} if sharded else {}
    make(path, data, chunks=(64, 64), compressors=zc.ZstdCodec(level=1), **kw)
    return data


def sample_data(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    """Random values of ``dtype`` covering its range; floats with a NaN every 7th element."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    if dt.kind == "f":
        x = rng.standard_normal(shape).astype(dt)
        x.flat[::7] = np.nan
        return x
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, shape, dtype=dt.newbyteorder("="),
                        endpoint=True).astype(dt)


SELECTIONS: dict[str, Select] = {
    "full": lambda z: z[...],
    "steps": lambda z: z[1::2, ::3],
    "neg_step_free": lambda z: z[-4:, 2:7],
    "int": lambda z: z[2, 3],
    "int_row": lambda z: z[-1],
    "ellipsis": lambda z: z[..., 1],
    "oindex_int": lambda z: z.oindex[[0, 4, 5], [8, 1, 1, 3]],
    "oindex_bool": lambda z: z.oindex[np.arange(z.shape[0]) % 3 == 0, :],
    "vindex_int": lambda z: z.vindex[[0, 6, 3, 3], [1, 8, 2, 2]],
    "vindex_bool": lambda z: z.vindex[np.add.outer(np.arange(z.shape[0]),
                                                   np.arange(z.shape[1])) % 4 == 1],
}
