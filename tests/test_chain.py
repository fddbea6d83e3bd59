"""decode/chain.py: which codec chains are planned, and the plans' steps and array steps."""

from __future__ import annotations

from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr.codecs as zc
from zarr.codecs._v2 import V2Codec
from zarr.core.array_spec import ArrayConfig, ArraySpec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.dtype import parse_data_type

from gds_zarr.decode.chain import ChainPlan, Unsupported, plan_chain


def _spec(shape: tuple[int, ...], dtype: str, order: str = "C") -> ArraySpec:
    return ArraySpec(shape=shape, dtype=parse_data_type(dtype, zarr_format=3), fill_value=0,
                     config=ArrayConfig.from_dict({"order": order}),
                     prototype=default_buffer_prototype())


def test_zstd_crc32c_steps_in_decode_order() -> None:
    plan = plan_chain([zc.BytesCodec(endian="big"), zc.ZstdCodec(), zc.Crc32cCodec()],
                      _spec((4, 5), "int32"))
    assert isinstance(plan, ChainPlan)
    assert [s.kind for s in plan.steps] == ["crc32c", "zstd"]
    assert plan.array.stored_dtype == np.dtype(">i4")
    assert plan.array.decoded_nbytes == 80 and plan.shard is None


def test_transposes_compose_and_invert() -> None:
    codecs = [zc.TransposeCodec(order=(2, 0, 1)), zc.TransposeCodec(order=(1, 0, 2)),
              zc.BytesCodec()]
    plan = plan_chain(codecs, _spec((2, 3, 4), "uint8"))
    assert isinstance(plan, ChainPlan)
    chunk = np.arange(24, dtype="u1").reshape(2, 3, 4)
    stored = chunk.transpose(2, 0, 1).transpose(1, 0, 2)
    assert plan.array.stored_shape == stored.shape
    np.testing.assert_array_equal(plan.array.to_chunk(stored.reshape(-1).copy()), chunk)


def test_numcodecs_adapters_and_v2() -> None:
    import zarr.codecs.numcodecs as zn

    plan = plan_chain([zc.BytesCodec(), zn.LZ4(), zn.Zlib()], _spec((8,), "float64"))
    assert isinstance(plan, ChainPlan) and [s.kind for s in plan.steps] == ["zlib", "lz4"]
    v2 = plan_chain([V2Codec(filters=(numcodecs.Delta(dtype="<i4"),),
                             compressor=numcodecs.Blosc())], _spec((3, 4), "int32", "F"))
    assert isinstance(v2, ChainPlan)
    assert [s.name for s in v2.steps] == ["blosc", "numcodecs.delta"]
    assert v2.array.order == "F"


@pytest.mark.parametrize("codecs,dtype,why", [
    ([zc.BytesCodec()], "bool", None),
    ([zc.VLenUTF8Codec()], "string", "data type"),
    ([zc.BytesCodec(), "Bz2"], "int8", None),
    ([zc.ShardingCodec(chunk_shape=(2,), codecs=[zc.ShardingCodec(chunk_shape=(1,))])],
     "int8", "nested sharding"),
    ([V2Codec(filters=(numcodecs.PackBits(),), compressor=None)], "bool", "filter"),
])
def test_supported_or_not(codecs: list[Any], dtype: str, why: str | None) -> None:
    import zarr.codecs.numcodecs as zn

    codecs = [zn.BZ2() if c == "Bz2" else c for c in codecs]
    plan = plan_chain(codecs, _spec((4,), dtype))
    if why is None:
        assert isinstance(plan, ChainPlan)
    else:
        assert isinstance(plan, Unsupported) and why in plan.reason


def test_sharding_layout() -> None:
    codec = zc.ShardingCodec(chunk_shape=(2, 3), index_location="start")
    plan = plan_chain([codec], _spec((4, 9), "float32"))
    assert isinstance(plan, ChainPlan) and plan.shard is not None
    assert plan.shard.chunks_per_shard == (2, 3)
    assert plan.shard.index_nbytes == 16 * 6 + 4 and plan.shard.index_location == "start"
    assert plan.array.stored_shape == (2, 3)
