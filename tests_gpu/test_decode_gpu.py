"""NvcompDecoder and the scatter kernel on a real GPU, against numcodecs and the numpy reference.

Skips cleanly where CuPy, nvCOMP or a CUDA device is missing.
"""

from __future__ import annotations

import itertools
import struct
import zlib

import numcodecs
import numpy as np
import pytest
from numcodecs.checksum32 import CRC32C

from gds_zarr._device import gpu_status

if not gpu_status().usable:
    pytest.skip(f"GPU path not usable: {gpu_status().reason}", allow_module_level=True)

cupy = pytest.importorskip("cupy")

from decode_cases import batch, encode, raw, step

from gds_zarr.decode import formats
from gds_zarr.decode._gpu import NvcompDecoder, device_adler32, device_crc32
from gds_zarr.decode._scatter_gpu import _scatter_reference, scatter_chunks
from gds_zarr.errors import ChunkDecodeError
from gds_zarr.planning.chunks import scatter_plan

NBYTES = 64 * 64 * 4
N = 37  # not a multiple of anything nvCOMP might batch by


CHAINS = {
    "zstd-1": [step("zstd", numcodecs.Zstd(level=1))],
    "zstd-9-checksum": [step("zstd", numcodecs.Zstd(level=9, checksum=True))],
    "gzip": [step("gzip", numcodecs.GZip(level=5))],
    "zlib": [step("zlib", numcodecs.Zlib(level=6))],
    "lz4": [step("lz4", numcodecs.LZ4())],
    "crc32c+zstd": [step("crc32c", CRC32C()), step("zstd", numcodecs.Zstd(level=3))],
    "zstd+crc32c": [step("zstd", numcodecs.Zstd(level=3)), step("crc32c", CRC32C())],
    "crc32c": [step("crc32c", CRC32C())],
    "raw": [],
    "blosc": [step("blosc", numcodecs.Blosc(cname="lz4", shuffle=1))],
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_decode_matches_numcodecs(name: str) -> None:
    steps = CHAINS[name]
    raws = [raw(i, NBYTES) for i in range(N)]
    src = batch([encode(steps, r) for r in raws])
    index = np.arange(N)[::-1].copy()  # output rows in another order than the read
    keys = [f"c/{i}" for i in range(N)]
    out = NvcompDecoder().decode_batch(steps, src, index, NBYTES, keys)
    assert isinstance(out, cupy.ndarray) and out.shape == (N, NBYTES)
    expected = np.stack([np.frombuffer(raws[i], np.uint8) for i in index])
    np.testing.assert_array_equal(cupy.asnumpy(out), expected)


def test_supports() -> None:
    d = NvcompDecoder()
    assert d.supports(CHAINS["crc32c+zstd"]) and d.supports(CHAINS["raw"])
    assert d.supports(CHAINS["blosc"])  # decode/_blosc_gpu.py: LZ4/Zstd inside by nvCOMP
    assert not d.supports(CHAINS["zstd-1"] + CHAINS["lz4"])


def _corrupt_case(name: str):
    raws = [raw(i, NBYTES) for i in range(8)]
    steps = CHAINS[{"crc-flip": "crc32c+zstd", "zstd-huge": "zstd-1", "lz4-prefix": "lz4",
                    "gzip-isize": "gzip", "zlib-payload": "zlib", "zstd-trunc": "zstd-1",
                    "gzip-payload": "gzip"}[name]]
    enc = [bytearray(encode(steps, r)) for r in raws]
    bad = enc[5]
    if name == "crc-flip":
        bad[len(bad) // 2] ^= 0x01
    elif name == "zstd-huge":
        enc[5] = bytearray(struct.pack("<I", formats.ZSTD_MAGIC) + b"\xe0"
                           + struct.pack("<Q", 1 << 50) + b"\x01\0\0")
    elif name == "lz4-prefix":
        bad[0:4] = struct.pack("<i", NBYTES + 16)
    elif name == "gzip-isize":
        bad[-4:] = struct.pack("<I", 7)
    elif name in ("zlib-payload", "gzip-payload"):
        bad[len(bad) // 2] ^= 0xFF
    elif name == "zstd-trunc":
        enc[5] = bad[: len(bad) - 10]
    return steps, [bytes(e) for e in enc]


@pytest.mark.fresh_process  # corrupt input to nvCOMP: a child process each
@pytest.mark.parametrize("name", ["crc-flip", "zstd-huge", "lz4-prefix", "gzip-isize",
                                  "zlib-payload", "gzip-payload", "zstd-trunc"])
def test_corrupt_chunk_raises_naming_key(name: str) -> None:
    steps, enc = _corrupt_case(name)
    keys = [f"c/{i}" for i in range(len(enc))]
    with pytest.raises(ChunkDecodeError) as info:
        NvcompDecoder().decode_batch(steps, batch(enc), np.arange(len(enc)), NBYTES, keys)
    assert info.value.key == "c/5"


def test_device_checksums_match_libraries() -> None:
    chunks = [np.random.default_rng(i).integers(0, 256, n, dtype=np.uint8).tobytes()
              for i, n in enumerate([0, 1, 4095, 4096, 4097, 100_000, 1 << 20])]
    src = batch(chunks)
    starts, stops = src.offsets, src.offsets + src.sizes
    import google_crc32c

    assert device_crc32(src.data, starts, stops, formats.CRC32C_POLY).tolist() == [
        google_crc32c.value(c) for c in chunks]
    assert device_crc32(src.data, starts, stops, formats.CRC32_POLY).tolist() == [
        zlib.crc32(c) for c in chunks]
    assert device_adler32(src.data, starts, stops).tolist() == [zlib.adler32(c) for c in chunks]


@pytest.mark.parametrize("dtype", ["u1", "<i2", "<f4", "<f8", "<c16"])
@pytest.mark.parametrize("selection", [(slice(None), slice(None)), (slice(3, 40), slice(5, 33)),
                                       (slice(1, 50, 3), slice(0, 37, 2))])
def test_scatter_kernel_matches_reference(dtype: str, selection: tuple[slice, ...]) -> None:
    shape, chunks = (50, 37), (8, 16)
    a = (np.arange(np.prod(shape)) % 251).reshape(shape).astype(dtype)
    grid = (range(-(-n // c)) for n, c in zip(shape, chunks, strict=True))
    coords = list(itertools.product(*grid))
    decoded = np.zeros((len(coords), int(np.prod(chunks)) * a.dtype.itemsize), np.uint8)
    for r, cc in enumerate(coords):
        block = np.zeros(chunks, a.dtype)
        part = a[tuple(slice(i * c, (i + 1) * c) for i, c in zip(cc, chunks, strict=False))]
        block[tuple(slice(0, m) for m in part.shape)] = part
        decoded[r] = block.reshape(-1).view(np.uint8)
    expected = a[selection]
    rows, csel, osel = [], [], []
    for r, cc in enumerate(coords):
        per_dim = []
        for d, (s, n, c) in enumerate(zip(selection, shape, chunks, strict=False)):
            idx = np.arange(n)[s]
            pos = np.flatnonzero(idx // c == cc[d])
            if pos.size == 0:
                break
            local = idx[pos] - cc[d] * c
            per_dim.append((slice(int(local[0]), int(local[-1]) + 1, s.step or 1),
                            slice(int(pos[0]), int(pos[-1]) + 1)))
        else:
            rows.append(r)
            csel.append(tuple(p[0] for p in per_dim))
            osel.append(tuple(p[1] for p in per_dim))
    plan = scatter_plan(np.array(rows), csel, osel, chunks, expected.shape)
    assert plan is not None
    ref = np.zeros(expected.shape, a.dtype)
    _scatter_reference(ref, decoded, plan)
    out = cupy.zeros(expected.shape, a.dtype)
    scatter_chunks(out, cupy.asarray(decoded), plan)
    np.testing.assert_array_equal(cupy.asnumpy(out), ref)
    np.testing.assert_array_equal(ref, expected)


def test_scatter_kernel_typed_transposed_rows_into_strided_view() -> None:
    """The pipeline's form: (n, *chunk_shape) typed rows, here F-order chunks seen as C."""
    a = np.arange(6 * 8, dtype="<f8").reshape(6, 8)
    coords = list(itertools.product(range(2), range(2)))
    rows_f = np.stack([a[i * 3:(i + 1) * 3, j * 4:(j + 1) * 4].ravel(order="F")
                       for i, j in coords])  # bytes as zarr v2 "F" order stores them
    typed = cupy.asarray(rows_f).reshape(4, 4, 3).transpose(0, 2, 1)  # (n, 3, 4), strided
    csel = [(slice(0, 3, 1), slice(0, 4, 1))] * 4
    osel = [(slice(i * 3, i * 3 + 3), slice(j * 4, j * 4 + 4)) for i, j in coords]
    plan = scatter_plan(np.arange(4), csel, osel, (3, 4), (6, 8))
    assert plan is not None
    big = cupy.full((6, 16), -1.0)
    scatter_chunks(big[:, ::2], typed, plan)
    np.testing.assert_array_equal(cupy.asnumpy(big[:, ::2]), a)
    assert bool((big[:, 1::2] == -1).all())
