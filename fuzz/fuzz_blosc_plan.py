"""atheris harness: the Blosc batch plan (``gds_zarr.planning.blosc``) and its CPU decoder.

Run on demand (not collected by pytest)::

    python fuzz/fuzz_blosc_plan.py -atheris_runs=100000

Each input is a mutated real Blosc chunk (or raw bytes), placed between two valid chunks of
one buffer (as in a batch read), planned by :func:`~gds_zarr.planning.blosc.plan_blosc` through a
reader that records every position it reads, and decoded by
:class:`~gds_zarr.decode._cpu.CpuDecoder` with the plan. Findings: any exception but
:class:`~gds_zarr.errors.ChunkDecodeError` (or one naming another chunk); a read outside the
chunk; a chunk refused that numcodecs decodes, or accepted that numcodecs refuses, or decoded to
other bytes than numcodecs' (numcodecs is only asked where c-blosc stays inside the chunk).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import numcodecs
    import numpy as np

    from gds_zarr._batch import BatchRead
    from gds_zarr.decode._base import BytesStep
    from gds_zarr.decode._cpu import CpuDecoder
    from gds_zarr.decode.formats import numpy_reader
    from gds_zarr.errors import ChunkDecodeError
    from gds_zarr.planning.blosc import plan_blosc

EXPECTED = 4096
RAW = (np.arange(EXPECTED, dtype=np.uint32) * 2654435761 >> 20).astype(np.uint8)
SEEDS = [bytes(numcodecs.Blosc(cname=c, shuffle=s, blocksize=b).encode(RAW.view(f"V{t}")))
         for c, s, b, t in [("lz4", 1, 0, 4), ("zstd", 2, 1024, 4), ("blosclz", 1, 1000, 2),
                            ("zlib", 0, 512, 8), ("lz4", 0, 0, 1)]]
NEIGHBOUR = SEEDS[0]
STEP = BytesStep("blosc", numcodecs.Blosc(), "blosc")
DECODER = CpuDecoder(threads=1, blosc_plan=True)


def _reference(chunk: bytes) -> np.ndarray | None:
    """numcodecs' decode where c-blosc stays inside the chunk and the output is defined."""
    if len(chunk) < 16 or int.from_bytes(chunk[4:8], "little", signed=True) != EXPECTED:
        return None
    if not 16 <= int.from_bytes(chunk[12:16], "little", signed=True) <= len(chunk):
        return None
    outs = []
    for fill in (0, 255):
        out = np.full(EXPECTED, fill, np.uint8)
        try:
            numcodecs.Blosc().decode(chunk, out=out)
        except Exception:  # noqa: BLE001 - refused
            return None
        outs.append(out)
    return outs[0] if np.array_equal(outs[0], outs[1]) else None


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():  # mutate a real frame: deeper than random bytes
        chunk = bytearray(SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)])
        for _ in range(fdp.ConsumeIntInRange(0, 4)):
            hi = len(chunk) if fdp.ConsumeBool() else min(len(chunk), 64)
            chunk[fdp.ConsumeIntInRange(0, hi - 1)] = fdp.ConsumeInt(1) & 0xFF
        chunk = bytearray(chunk[: fdp.ConsumeIntInRange(0, len(chunk))])
    else:
        chunk = bytearray(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512)))
    parts = [NEIGHBOUR, bytes(chunk), NEIGHBOUR]
    sizes = np.array([len(p) for p in parts], np.int64)
    offs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    buf = np.frombuffer(b"".join(parts), np.uint8).copy()
    plain = numpy_reader(buf)
    lo, hi = int(offs[1]), int(offs[1] + sizes[1])

    def reader(pos: np.ndarray, width: int) -> np.ndarray:
        p = np.asarray(pos, np.int64)
        assert ((p >= lo) & (p + width <= hi)).all(), "read outside the chunk"
        return plain(p, width)

    try:
        plan_blosc(reader, offs[1:2], offs[1:2] + sizes[1:2], EXPECTED, ["c/1"])
    except ChunkDecodeError as e:
        assert e.key == "c/1"
    want = _reference(bytes(chunk))
    src = BatchRead(buf, offs, sizes, np.ones(3, bool))
    try:
        rows = DECODER.decode_batch([STEP], src, np.arange(3), EXPECTED, ["n/0", "c/1", "n/2"])
    except ChunkDecodeError as e:
        assert e.key == "c/1"
        assert want is None or len(chunk) < 16, "refused a chunk numcodecs decodes"
        return
    assert want is not None, "accepted a chunk numcodecs refuses"
    assert np.array_equal(rows[1], want)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
