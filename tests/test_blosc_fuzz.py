"""Mutated real Blosc chunks through the batch plan and its CPU decoder (bounded hypothesis).

The properties, with numcodecs' ``Blosc.decode`` of the same bytes as the reference:

* never accept what numcodecs refuses: where numcodecs raises, the decoder raises
  :class:`ChunkDecodeError` naming the chunk's key;
* never decode differently: where numcodecs decodes, the decoder gives the same bytes;
* never another exception, never a read outside the chunk (the chunk sits between others).

Both CPU twins run it: the C row decoder (``decode/_blosc_native.c``) and the plan in Python.
The same target runs under atheris (coverage-guided, unbounded) in ``fuzz/fuzz_blosc_plan.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numcodecs
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gds_zarr._batch import BatchRead
from gds_zarr.decode import _blosc_native
from gds_zarr.decode._base import BytesStep
from gds_zarr.decode._cpu import CpuDecoder
from gds_zarr.errors import ChunkDecodeError

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
STEP = BytesStep("blosc", numcodecs.Blosc(), "blosc")
EXPECTED = 4 * 2000


def _raw(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = (np.cumsum(rng.integers(0, 2, EXPECTED // 2)) // 8 % 253).astype(np.uint8)
    return np.concatenate([smooth, rng.integers(0, 256, EXPECTED // 2, dtype=np.uint8)])


def _seed(seed: int, typesize: int, **kw: object) -> bytes:
    return bytes(numcodecs.Blosc(**kw).encode(_raw(seed).view(f"V{typesize}")))  # type: ignore[arg-type]


SEEDS = [
    _seed(0, 4, cname="lz4", shuffle=1),                       # one block, four split streams
    _seed(1, 4, cname="zstd", shuffle=2, blocksize=1024),      # eight blocks, bit shuffle
    _seed(2, 2, cname="blosclz", shuffle=1, blocksize=3000),   # short last block
    _seed(3, 8, cname="zlib", shuffle=0, clevel=1, blocksize=512),
    _seed(4, 1, cname="lz4hc", shuffle=2, clevel=9),
    _seed(5, 4, cname="lz4", clevel=0),                         # memcpyed
]
NEIGHBOUR = SEEDS[0]
DECODER = CpuDecoder(threads=1, blosc_plan=True)


def numcodecs_decode(chunk: bytes) -> np.ndarray | None:
    """numcodecs' answer for ``chunk``, or None where it refuses; skips undefined output."""
    declared = int.from_bytes(chunk[4:8], "little", signed=True) if len(chunk) >= 16 else -1
    cbytes = int.from_bytes(chunk[12:16], "little", signed=True) if len(chunk) >= 16 else -1
    if declared != EXPECTED or not 16 <= cbytes <= len(chunk):
        return None  # refused before decoding by design (c-blosc would read past the chunk)
    outs = []
    for fill in (0x00, 0xFF):
        out = np.full(EXPECTED, fill, np.uint8)
        try:
            numcodecs.Blosc().decode(chunk, out=out)
        except Exception:  # noqa: BLE001 - numcodecs refuses it
            return None
        outs.append(out)
    # c-blosc may leave bytes unwritten in a forged frame: no defined answer to compare with
    assume(np.array_equal(outs[0], outs[1]))
    return outs[0]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed with a few bit flips, byte or int32 writes (mostly in the header and the block
    table, where one change moves every later read), maybe truncated."""
    chunk = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        region = draw(st.sampled_from(["header", "header", "table", "any"]))
        hi = {"header": 16, "table": min(len(chunk), 96), "any": len(chunk)}[region]
        at = draw(st.integers(0, hi - 1))
        kind = draw(st.sampled_from(["flip", "byte", "int32"]))
        if kind == "flip":
            chunk[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            chunk[at] = draw(st.integers(0, 255))
        else:  # an int32 field: small, negative or huge values
            v = draw(st.sampled_from([0, 1, -1, 16, 127, 128, 2**31 - 1, -(2**31),
                                      len(chunk), EXPECTED, 1024]))
            chunk[at:at + 4] = int(v).to_bytes(4, "little", signed=True)[: len(chunk) - at]
    if draw(st.integers(0, 3)) == 0:
        chunk = chunk[: draw(st.integers(0, len(chunk)))]
    return bytes(chunk)


def decode_between_neighbours(chunk: bytes) -> np.ndarray:
    parts = [NEIGHBOUR, chunk, NEIGHBOUR]
    sizes = np.array([len(p) for p in parts], np.int64)
    data = np.frombuffer(b"".join(parts), np.uint8).copy()
    src = BatchRead(data, np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64),
                    sizes, np.ones(3, bool))
    out: np.ndarray = DECODER.decode_batch([STEP], src, np.arange(3), EXPECTED,
                                           ["n/0", "c/1", "n/2"])
    return out


@contextlib.contextmanager
def twin(name: str) -> Iterator[None]:
    """Decode with the C row decoder ("native") or the plan in Python ("python")."""
    if name == "native" and _blosc_native.library() is None:
        pytest.skip("gds_zarr's C kernels are not built here")
    with pytest.MonkeyPatch.context() as mp:
        if name == "python":
            mp.setattr(_blosc_native, "library", lambda: None)
        yield


@pytest.mark.parametrize("twin_name", ["native", "python"])
@FUZZ
@given(chunk=mutated())
def test_mutated_chunks_decode_as_numcodecs_or_raise(twin_name: str, chunk: bytes) -> None:
    want = numcodecs_decode(chunk)
    try:
        with twin(twin_name):
            rows = decode_between_neighbours(chunk)
    except ChunkDecodeError as e:
        assert e.key == "c/1", e
        assert want is None, f"refused a chunk numcodecs decodes: {e}"
        return
    assert want is not None, "accepted a chunk numcodecs refuses"
    assert np.array_equal(rows[1], want)
    assert np.array_equal(rows[0], rows[2])


def test_seeds_decode() -> None:
    for k, chunk in enumerate(SEEDS):
        assert np.array_equal(decode_between_neighbours(chunk)[1], _raw(k))
