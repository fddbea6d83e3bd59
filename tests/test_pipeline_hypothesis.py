"""Hypothesis: random shapes, chunkings, shardings and selections against zarr's own result."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.storage import MemoryStore

from gds_zarr.pipeline import PIPELINE_PATH, stats

DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"


@st.composite
def arrays_and_selections(draw: Any) -> tuple[Any, ...]:
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    chunks = tuple(draw(st.integers(1, s + 2)) for s in shape)
    shards = None
    if draw(st.booleans()):
        shards = tuple(c * draw(st.integers(1, 3)) for c in chunks)
    written = tuple(slice(0, draw(st.integers(0, s))) for s in shape)
    kind = draw(st.sampled_from(["basic", "oindex", "vindex"]))
    if kind == "basic":
        sel = tuple(
            draw(st.one_of(st.integers(-s, s - 1),
                           st.builds(slice, st.none() | st.integers(-s, s),
                                     st.none() | st.integers(-s, s),
                                     st.none() | st.integers(1, 4))))
            for s in shape)
    elif kind == "oindex":
        sel = tuple(draw(st.one_of(
            st.lists(st.integers(0, s - 1), min_size=1, max_size=5).map(np.array),
            st.lists(st.booleans(), min_size=s, max_size=s).map(np.array),
            st.just(slice(None))))
            for s in shape)
    else:
        n = draw(st.integers(1, 6))
        sel = tuple(np.array(draw(st.lists(st.integers(0, s - 1), min_size=n, max_size=n)))
                    for s in shape)
    return shape, chunks, shards, written, kind, sel


def _select(z: Any, kind: str, sel: Any) -> np.ndarray:
    out = z[sel] if kind == "basic" else getattr(z, kind)[sel]
    return np.asarray(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays_and_selections())
def test_random_reads_match_zarr(case: tuple[Any, ...]) -> None:
    shape, chunks, shards, written, kind, sel = case
    data = np.arange(int(np.prod(shape)), dtype="f4").reshape(shape)
    store = MemoryStore()
    with warnings.catch_warnings(), zarr.config.set({"codec_pipeline.path": DEFAULT}):
        warnings.simplefilter("ignore")
        z = zarr.create_array(store, shape=shape, chunks=chunks, shards=shards, dtype="f4",
                              fill_value=np.nan)
        z[written] = data[written]
        ref = _select(zarr.open_array(store, mode="r"), kind, sel)
    stats.reset()
    with zarr.config.set({"codec_pipeline.path": PIPELINE_PATH}):
        got = _select(zarr.open_array(store, mode="r"), kind, sel)
    assert got.shape == ref.shape and got.tobytes() == ref.tobytes()
    assert stats.delegated_reads == 0
