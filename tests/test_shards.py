"""planning/shards.py: index parsing and validation, on real shard files written by zarr."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import zarr
import zarr.codecs as zc
from zarr.storage import LocalStore

from gds_zarr._batch import BatchRead
from gds_zarr.errors import ShardIndexError
from gds_zarr.planning.shards import EMPTY, ShardLayout, index_request, inner_ranges, parse_indexes


def _batch(blobs: list[bytes | None]) -> BatchRead:
    sizes = np.array([0 if b is None else len(b) for b in blobs], np.int64)
    data = np.frombuffer(b"".join(b or b"" for b in blobs), np.uint8).copy()
    return BatchRead(data, np.cumsum(sizes) - sizes, sizes,
                     np.array([b is not None for b in blobs]))


@pytest.mark.parametrize("location", ["start", "end"])
def test_parse_real_shards(tmp_path: Any, location: str) -> None:
    path = tmp_path / "a.zarr"
    z = zarr.create_array(LocalStore(str(path)), shape=(8, 6), dtype="u2", chunks=(4, 6),
                          serializer=zc.ShardingCodec(chunk_shape=(2, 3),
                                                      index_location=location),
                          compressors=None)
    z[:2, :3] = 7  # only inner chunk 0 of shard c/0/0 is written
    layout = ShardLayout((2, 3), (2, 2), location, True)
    raw = (path / "c" / "0" / "0").read_bytes()
    start, stop = index_request(layout)
    index = raw[start:] if location == "end" else raw[start:stop]
    offsets, nbytes, empty = parse_indexes(_batch([index, None]), ["c/0/0", "c/1/0"], layout)
    assert empty.tolist() == [[False, True, True, True], [True] * 4]
    assert int(nbytes[0, 0]) == 2 * 3 * 2
    s, e = inner_ranges(offsets, nbytes, np.array([0]), np.array([0]))
    np.testing.assert_array_equal(np.frombuffer(raw[s[0]:e[0]], "<u2"), 7)


def _index(entries: list[tuple[int, int]], crc: bool) -> bytes:
    import numcodecs

    body = np.array(entries, "<u8").tobytes()
    return bytes(numcodecs.CRC32C(location="end").encode(body)) if crc else body


def test_crc_mismatch_and_short_index() -> None:
    layout = ShardLayout((1,), (2,), "end", True)
    good = _index([(0, 4), (4, 4)], True)
    parse_indexes(_batch([good]), ["k"], layout)
    bad = bytearray(good)
    bad[0] ^= 1
    with pytest.raises(ShardIndexError, match=r"'k'.*crc32c"):
        parse_indexes(_batch([bytes(bad)]), ["k"], layout)
    with pytest.raises(ShardIndexError, match="fewer than"):
        parse_indexes(_batch([good[:10]]), ["k"], layout)


@pytest.mark.parametrize("entry,why", [
    ((int(EMPTY), 4), "not the other"),
    ((2**63, 2**63 + 5), "overflows"),
    ((3, 4), "into the index"),
    (((1 << 62) + 1, 4), "absurd offset"),
    ((32, (1 << 62) + 1), "absurd size"),
])
def test_absurd_entries(entry: tuple[int, int], why: str) -> None:
    layout = ShardLayout((1,), (2,), "start", False)
    with pytest.raises(ShardIndexError, match=why):
        parse_indexes(_batch([_index([(32, 4), entry], False)]), ["s"], layout)
