"""HDF5's filter chains (fletcher32, a compressor, shuffle) on the CPU
(gds_zarr/decode/_filters.py), and the GPU Fletcher-32 kernel's arithmetic modelled in numpy
(gds_zarr/decode/_filters_gpu.py): the same bytes and errors as numcodecs."""

from __future__ import annotations

from typing import Any

import numcodecs
import numpy as np
import pytest
from numcodecs.fletcher32 import Fletcher32

from gds_zarr._batch import BatchRead
from gds_zarr.decode import _cpu, _filters
from gds_zarr.decode._base import BytesStep
from gds_zarr.decode._cpu import CpuDecoder
from gds_zarr.decode._filters_gpu import fletcher32_segments, fold_fletcher32
from gds_zarr.errors import ChunkDecodeError


def _steps(elementsize: int, compressor: Any = None, checksum: bool = True) -> list[BytesStep]:
    steps = [BytesStep("fletcher32", Fletcher32(), "numcodecs.fletcher32")] if checksum else []
    if compressor is not None:
        steps.append(BytesStep(compressor.codec_id, compressor, compressor.codec_id))
    steps.append(BytesStep("shuffle", numcodecs.Shuffle(elementsize), "numcodecs.shuffle"))
    return steps


def _encoded_batch(steps: list[BytesStep], raws: list[bytes]) -> BatchRead:
    encoded = []
    for r in raws:
        for s in reversed(steps):
            r = bytes(s.codec.encode(r))
        encoded.append(np.frombuffer(r + b"\x55" * 3, np.uint8))  # unaligned, as coalesced
    sizes = np.array([e.nbytes - 3 for e in encoded], np.int64)
    offsets = np.cumsum(sizes + 3) - sizes - 3
    return BatchRead(np.concatenate(encoded), offsets, sizes, np.ones(len(raws), bool))


@pytest.mark.parametrize("elementsize", [1, 2, 4, 8, 16, 300])
@pytest.mark.parametrize("compressor", [numcodecs.Zlib(4), numcodecs.GZip(5), numcodecs.Zstd(3),
                                        None], ids=["zlib", "gzip", "zstd", "none"])
def test_filter_chains_decode_natively_as_numcodecs(elementsize: int, compressor: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(elementsize)
    nbytes = 2400 * elementsize
    raws = [np.cumsum(rng.standard_normal(nbytes // 8)).astype("<f8").tobytes()
            for _ in range(7)]
    steps = _steps(elementsize, compressor)
    assert _filters.split_chain(steps, nbytes) is not None
    slow: list[str] = []
    real = _cpu._decode_one
    monkeypatch.setattr(_cpu, "_decode_one", lambda s, b, r, k: (slow.append(k), real(s, b, r, k)))
    got = CpuDecoder(threads=2).decode_batch(steps, _encoded_batch(steps, raws), np.arange(7),
                                             nbytes, [f"k{i}" for i in range(7)])
    assert not slow  # every chunk by the filter path, none by numcodecs
    np.testing.assert_array_equal(got, np.stack([np.frombuffer(r, np.uint8) for r in raws]))


def test_filter_chain_refusals_are_numcodecs_errors() -> None:
    steps = _steps(4, numcodecs.Zlib(4))
    raws = [np.arange(1000, dtype="<f4").tobytes()] * 3
    src = _encoded_batch(steps, raws)
    src.data[src.offsets[1] + 5] ^= 0xFF  # inside the compressed bytes: the checksum fails
    with pytest.raises(ChunkDecodeError, match=r"'k1'.*numcodecs.fletcher32.*fletcher32 "
                                               r"checksum"):
        CpuDecoder().decode_batch(steps, src, np.arange(3), 4000, ["k0", "k1", "k2"])
    # a shuffle whose element size does not divide the chunk: numcodecs' chain, its error
    assert _filters.split_chain(_steps(3, numcodecs.Zlib(4)), 4000) is None


def test_fletcher32_segments_fold_to_hdf5s_checksum() -> None:
    """The GPU kernel's arithmetic (segment sums, weights, the fold), modelled in numpy, gives
    numcodecs' (HDF5's) Fletcher-32 for every length parity and for sums that fold to 0xFFFF."""
    rng = np.random.default_rng(5)
    chunks = [rng.integers(0, 256, n, np.uint8) for n in (1, 2, 3, 4095, 4096, 4097, 12345, 9000)]
    chunks += [np.zeros(10, np.uint8), np.full(8192, 255, np.uint8), np.full(7, 255, np.uint8)]
    data = np.concatenate(chunks)
    stops = np.cumsum([c.nbytes for c in chunks])
    starts = stops - [c.nbytes for c in chunks]
    seg_chunk, seg_start, seg_len, seg_after = fletcher32_segments(starts, stops, 4096)
    exact = np.zeros(len(chunks), np.uint64)
    weighted = np.zeros(len(chunks), np.uint64)
    for c, a, n, after in zip(seg_chunk, seg_start, seg_len, seg_after, strict=True):
        b = np.concatenate([data[a:a + n], np.zeros(n % 2, np.uint8)])
        w = (b[0::2].astype(np.uint64) << np.uint64(8)) | b[1::2]
        words = len(w)
        t = int((w * np.arange(words, 0, -1, dtype=np.uint64)).sum())
        exact[c] += np.uint64(int(w.sum()))
        weighted[c] += np.uint64((t % 65535 + ((after + 1) // 2 % 65535) * (int(w.sum()) % 65535))
                                 % 65535)
    expected = [int(np.frombuffer(Fletcher32().encode(c)[-4:], "<u4")[0]) for c in chunks]
    np.testing.assert_array_equal(fold_fletcher32(exact, weighted), expected)


