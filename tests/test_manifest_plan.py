"""VirtualiZarr chunk keys to file ranges (gds_zarr/planning/manifest.py): pure numpy, no
VirtualiZarr needed."""

from __future__ import annotations

import numpy as np
from numpy.dtypes import StringDType

from gds_zarr.planning.manifest import clamp_requests, parse_chunk_keys, resolve_requests


def test_chunk_keys_parse_without_an_object_per_chunk() -> None:
    keys = ["v/c/0/1", "v/c/2/0", "v/c/1/1"]
    np.testing.assert_array_equal(parse_chunk_keys(keys, "v/c/", "/", (3, 2)), [1, 4, 3])
    np.testing.assert_array_equal(parse_chunk_keys(["g/v/c.1.0"], "g/v/c.", ".", (2, 2)), [2])
    np.testing.assert_array_equal(parse_chunk_keys(["v/2.1"], "v/", ".", (3, 2)), [5])
    assert parse_chunk_keys(["v/c"], "v/c", "/", ()).tolist() == [0]
    for bad in (["v/c/0"], ["v/c/0/1/2"], ["v/c/0/x"], ["w/c/0/0"], ["v/c/3/0"], ["v/c/0/-1"],
                ["v/c/0/1", "v/c/01"], ["v/c/" + "9" * 19 + "/0"]):
        assert parse_chunk_keys(bad, "v/c/", "/", (3, 2)) is None, bad


def test_requests_resolve_to_file_ranges() -> None:
    paths = np.array([["file:///a", ""], ["__inlined__", "file:///b"]], dtype=StringDType())
    offsets = np.array([[100, 0], [0, 7]], np.uint64)
    lengths = np.array([[50, 0], [3, 20]], np.uint64)
    # whole chunk, a range past the chunk's end, a suffix, missing, inlined
    flat = np.array([0, 0, 3, 1, 2])
    starts = np.array([0, 40, -5, 0, 0])
    stops = np.array([-1, 90, -1, -1, -1])
    r = resolve_requests(paths, offsets, lengths, flat, starts, stops)
    assert [r.files[i] for i in r.file_of] == ["file:///a", "file:///a", "file:///b", "",
                                               "__inlined__"]
    np.testing.assert_array_equal(r.starts, [100, 140, 22, 0, 0])
    np.testing.assert_array_equal(r.stops, [150, 150, 27, 0, 3])
    np.testing.assert_array_equal(r.missing, [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(r.inlined, [0, 0, 0, 0, 1])
    lo, hi = clamp_requests(np.array([0, 5, -3, 9]), np.array([-1, 2, -1, 20]),
                            np.array([10, 10, 2, 10]))
    np.testing.assert_array_equal(lo, [0, 5, 0, 9])
    np.testing.assert_array_equal(hi, [10, 5, 2, 10])


