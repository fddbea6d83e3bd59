"""The emulated nvCOMP follows nvCOMP 6's Python contract and is strict where it is (issue 18,
item 2): bytes CPU libraries wrote decode, in stream order, checked against their allocations.

Inputs and outputs here are plain objects exposing ``__cuda_array_interface__`` over memory of
the emulated device (tests reach the bytes through ``_emucuda.memory``, the emulator's own
back door), so these tests need nothing of the CuPy stand-in but the last one. They run only on
the emulated device (GDS_ZARR_TEST_DEVICE=emulated); a device a test kills is revived after it.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.emulator

nvcomp = pytest.importorskip("nvidia.nvcomp")
if not getattr(nvcomp, "__emulated__", False):
    pytest.skip("tests the emulated nvCOMP (tests/emulated_gpu first on PYTHONPATH)",
                allow_module_level=True)

from _emucuda import memory, streams  # only where the emulator is importable
from numcodecs import GZip, Zlib
from numcodecs import lz4 as nc_lz4
from numcodecs import zstd as nc_zstd

RAW = nvcomp.BitstreamKind.RAW


class DevBuf:
    """``nbytes`` of emulated device memory behind ``__cuda_array_interface__``.

    ``claim`` makes the interface describe more bytes than were allocated (a lying producer);
    ``stream`` is the CAI v3 stream (None: none named).
    """

    def __init__(self, nbytes: int, device: int = 0, *, claim: int | None = None,
                 stream: int | None = 1) -> None:
        self.alloc = memory.allocate(nbytes, device)
        self.nbytes, self.claim, self.stream = nbytes, claim, stream

    @property
    def ptr(self) -> int:
        return int(self.alloc.ptr)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": (self.claim or self.nbytes,), "typestr": "|u1", "strides": None,
                "data": (self.ptr, False), "version": 3, "stream": self.stream}

    def write(self, offset: int, data: bytes) -> None:
        memory.view(self.ptr + offset, len(data), "test write")[:] = np.frombuffer(data, np.uint8)

    def read(self, offset: int, n: int) -> bytes:
        return bytes(memory.view(self.ptr + offset, n, "test read"))


def _deflate(data: bytes, level: int = 6) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


#: How CPU libraries write each format (what zarr stores), as nvCOMP's RAW kind reads it.
ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "Zstd": lambda d: bytes(nc_zstd.compress(d, 3)),
    "LZ4": lambda d: bytes(nc_lz4.compress(d))[4:],  # numcodecs' 4-byte size prefix stripped
    "Deflate": _deflate,
    "Gzip": lambda d: bytes(GZip(5).encode(d)),
}


def _chunks() -> list[bytes]:
    rng = np.random.default_rng(18)
    return [
        np.arange(2048, dtype=np.float32).tobytes(),
        bytes(5000),
        rng.integers(0, 4, 3000, dtype=np.uint8).tobytes(),
        rng.integers(0, 256, 777, dtype=np.uint8).tobytes(),  # incompressible
        b"zarr chunk " * 123,
    ]


def _pack(parts: list[bytes], align: int = 16, device: int = 0, pad: int = 0
          ) -> tuple[DevBuf, list[int], list[int]]:
    """One device buffer holding ``parts`` at ``align``-aligned offsets."""
    offsets, pos = [], 0
    for p in parts:
        offsets.append(pos)
        pos += -(-len(p) // align) * align
    buf = DevBuf(max(pos + pad, 1), device)
    for o, p in zip(offsets, parts, strict=True):
        buf.write(o, p)
    return buf, offsets, [len(p) for p in parts]


def _codec(algorithm: str, device: int = 0, stream: int = 0, **kw: Any) -> Any:
    return nvcomp.Codec(algorithm=algorithm, device_id=device, cuda_stream=stream,
                        bitstream_kind=RAW, **kw)


@pytest.fixture(autouse=True)
def _clean_device() -> Iterator[None]:
    yield
    for d in range(streams.device_count()):
        try:
            streams.synchronize_device(d)
        except Exception:  # noqa: BLE001 - a test that kills a device leaves its work behind
            pass
    streams.revive_all()
    nvcomp.set_device_allocator(None)


# ---------------------------------------------------------------- what decodes


@pytest.mark.parametrize("algorithm", sorted(ENCODERS))
def test_round_trip_of_cpu_written_chunks(algorithm: str) -> None:
    chunks = _chunks()
    buf, offs, sizes = _pack([ENCODERS[algorithm](c) for c in chunks])
    codec = _codec(algorithm)
    srcs = nvcomp.as_arrays(buf, offs, sizes)
    # No config: nvCOMP sizes every chunk first (a field for Zstd, a walk for the others).
    res = codec.decode(srcs)
    assert res.buffer_sizes == [len(c) for c in chunks]
    host = res.cpu()
    assert [bytes(np.asarray(host[i])) for i in range(len(chunks))] == chunks
    # Known sizes: a config from a CompressConfig, decoded straight into fixed slots.
    slot = 8192
    dst = DevBuf(slot * len(chunks))
    dsts = nvcomp.as_arrays(dst, [i * slot for i in range(len(chunks))], [slot] * len(chunks))
    cfg = codec.decompression_config(codec.compression_config([len(c) for c in chunks]))
    out = codec.decode(srcs, out=dsts, decompression_config=cfg)
    assert out is dsts
    assert out.buffer_sizes == [len(c) for c in chunks]
    assert [dst.read(i * slot, len(c)) for i, c in enumerate(chunks)] == chunks


def test_zlib_stream_is_deflate_inside_a_header_and_a_trailer() -> None:
    data = np.arange(3000, dtype=np.int16).tobytes()
    z = bytes(Zlib(5).encode(data))
    buf, offs, sizes = _pack([z[2:-4]])  # 2-byte header, Adler-32 trailer
    res = _codec("Deflate").decode(nvcomp.as_arrays(buf, offs, sizes))
    assert bytes(np.asarray(res.cpu()[0])) == data


def test_gzip_trailer_is_not_checked_and_only_the_first_member_decodes() -> None:
    data = b"first member " * 50
    g = bytearray(gzip.compress(data))
    g[-8] ^= 0xFF  # a wrong CRC-32: nvCOMP's gzip.h promises no check, the caller must do it
    two = bytes(g) + gzip.compress(b"second member")
    buf, offs, sizes = _pack([bytes(g), two])
    res = _codec("Gzip").decode(nvcomp.as_arrays(buf, offs, sizes))
    assert res.buffer_sizes == [len(data), len(data)]


def test_snappy_block_with_overlapping_copies() -> None:
    # "abcd" then a copy of 10 bytes from 4 back (overlapping), then a literal.
    block = (bytes([17]) + bytes([3 << 2]) + b"abcd" + bytes([((10 - 1) << 2) | 2])
             + struct.pack("<H", 4) + bytes([2 << 2]) + b"xyz")
    buf, offs, sizes = _pack([block])
    res = _codec("Snappy").decode(nvcomp.as_arrays(buf, offs, sizes))
    assert bytes(np.asarray(res.cpu()[0])) == b"abcdabcdabcdabxyz"


def test_outputs_nvcomp_allocates_take_data_type() -> None:
    data = np.arange(1000, dtype=np.int32)
    buf, offs, sizes = _pack([ENCODERS["Zstd"](data.tobytes())])
    res = _codec("Zstd").decode(nvcomp.as_arrays(buf, offs, sizes), data_type="<i4")
    a = res[0]
    assert (a.dtype, a.shape, a.item_size, a.buffer_size) == (np.dtype("<i4"), (1000,), 4, 4000)
    assert a.buffer_kind == nvcomp.ArrayBufferKind.STRIDED_DEVICE
    assert a.__cuda_array_interface__["typestr"] == "<i4"
    assert np.array_equal(np.asarray(a.cpu()), data)
    with pytest.raises(ValueError, match="Unknown output data type"):
        _codec("Zstd").decode(nvcomp.as_arrays(buf, offs, sizes), data_type="<c16")


def test_single_array_overloads() -> None:
    data = b"single array " * 40
    enc = ENCODERS["LZ4"](data)
    buf = DevBuf(len(enc))
    buf.write(0, enc)
    codec = _codec("LZ4")
    src = nvcomp.as_array(buf)
    assert codec.get_uncomp_buffer_size(src) == len(data)
    out = codec.decode(src)
    assert bytes(np.asarray(out.cpu())) == data
    cfg = codec.decompression_config(codec.compression_config(len(data)))
    with pytest.raises(ValueError, match="built for a single array"):
        codec.decode(nvcomp.as_arrays(buf, [0], [len(enc)]), decompression_config=cfg)
    small = DevBuf(16)
    with pytest.raises(ValueError, match="too small to hold the data"):
        codec.decode(src, out=small, decompression_config=cfg)
    plain = DevBuf(len(data))
    plain.write(0, data)
    enc_arr = codec.encode(nvcomp.as_array(plain))
    assert 0 < enc_arr.buffer_size <= codec.get_max_comp_buffer_size(nvcomp.as_array(plain))
    assert bytes(np.asarray(codec.decode(enc_arr).cpu())) == data


@pytest.mark.parametrize("kind", ["RAW", "NVCOMP_NATIVE", "WITH_UNCOMPRESSED_SIZE"])
@pytest.mark.parametrize("algorithm", ["Zstd", "LZ4", "Deflate", "Gzip", "Snappy"])
def test_encode_then_decode(algorithm: str, kind: str) -> None:
    chunks = _chunks()
    buf, offs, sizes = _pack(chunks)
    codec = nvcomp.Codec(algorithm=algorithm, device_id=0,
                         bitstream_kind=getattr(nvcomp.BitstreamKind, kind))
    enc = codec.encode(nvcomp.as_arrays(buf, offs, sizes))
    assert len(enc) == len(chunks) and all(0 < s for s in enc.buffer_sizes)
    dec = codec.decode(enc)
    assert [bytes(np.asarray(a)) for a in dec.cpu()] == chunks
    if kind == "NVCOMP_NATIVE":  # the algorithm comes from the header
        dec = nvcomp.Codec(device_id=0).decode(enc)
        assert dec.buffer_sizes == [len(c) for c in chunks]


def test_raw_lz4_written_by_the_emulator_is_what_cpu_libraries_read() -> None:
    data = b"interoperable " * 100
    buf, offs, sizes = _pack([data])
    enc = _codec("LZ4").encode(nvcomp.as_arrays(buf, offs, sizes))
    raw = bytes(np.asarray(enc.cpu()[0]))
    assert bytes(nc_lz4.decompress(struct.pack("<i", len(data)) + raw)) == data


# ---------------------------------------------------------------- stream order


def test_decode_runs_at_a_synchronization_point() -> None:
    data = b"q" * 4000
    buf, offs, sizes = _pack([ENCODERS["Zstd"](data)])
    dst = DevBuf(4096)
    dst.write(0, b"\x11" * 4096)
    codec = _codec("Zstd", stream=streams.new_stream(0, non_blocking=True))
    cfg = codec.decompression_config(codec.compression_config([len(data)]))
    before = streams.pending(0)
    res = codec.decode(nvcomp.as_arrays(buf, offs, sizes), out=nvcomp.as_arrays(dst, [0], [4096]),
                       decompression_config=cfg)
    assert streams.pending(0) > before
    assert dst.read(0, 8) == b"\x11" * 8  # queued, not run
    assert res.buffer_sizes == [4000]  # waits for it
    assert dst.read(0, 4000) == data


def test_input_overwritten_after_the_call_is_what_the_decode_reads() -> None:
    """The decode reads its input when it runs: bytes changed before the synchronization are
    the ones decoded, as on hardware (a caller must not reuse an input before the sync)."""
    a, b = b"A" * 300, b"B" * 300
    ea, eb = _deflate(a, 0), _deflate(b, 0)  # stored blocks: the same length
    assert len(ea) == len(eb)
    buf, offs, sizes = _pack([ea])
    codec = _codec("Deflate", stream=streams.new_stream(0, non_blocking=True))
    cfg = codec.decompression_config(codec.compression_config([300]))
    res = codec.decode(nvcomp.as_arrays(buf, offs, sizes), decompression_config=cfg)
    buf.write(0, eb)
    assert bytes(np.asarray(res.cpu()[0])) == b


def test_work_queued_after_the_decode_on_its_stream_runs_after_it() -> None:
    a, b = b"A" * 300, b"B" * 300
    ea, eb = _deflate(a, 0), _deflate(b, 0)
    buf, offs, sizes = _pack([ea])
    s = streams.new_stream(0, non_blocking=True)
    codec = _codec("Deflate", stream=s)
    cfg = codec.decompression_config(codec.compression_config([300]))
    res = codec.decode(nvcomp.as_arrays(buf, offs, sizes), decompression_config=cfg)
    streams.enqueue(s, 0, lambda: buf.write(0, eb), "test: overwrite the input")
    assert bytes(np.asarray(res.cpu()[0])) == a


def test_input_is_read_after_the_work_of_the_stream_its_interface_names() -> None:
    """CUDA Array Interface v3: the consumer waits for the producer's stream (as it was when
    the buffer was wrapped), even when it decodes on another stream."""
    data = b"produced on another stream " * 20
    enc = ENCODERS["Zstd"](data)
    producer = streams.new_stream(0, non_blocking=True)
    buf = DevBuf(len(enc), stream=producer)
    streams.enqueue(producer, 0, lambda: buf.write(0, enc), "test: producer writes the input")
    srcs = nvcomp.as_arrays(buf, [0], [len(enc)])
    codec = _codec("Zstd", stream=streams.new_stream(0, non_blocking=True))
    cfg = codec.decompression_config(codec.compression_config([len(data)]))
    res = codec.decode(srcs, decompression_config=cfg)
    assert res.buffer_sizes == [len(data)]
    assert bytes(np.asarray(res.cpu()[0])) == data


# ---------------------------------------------------------------- strictness


def test_required_alignments_are_the_headers() -> None:
    got = {a: _codec(a).get_required_decompression_alignment()
           for a in ("Zstd", "Gzip", "LZ4", "Deflate", "Snappy")}
    assert got == {"Zstd": 8, "Gzip": 8, "LZ4": 4, "Deflate": 4, "Snappy": 1}
    assert nvcomp.Codec(device_id=0).get_required_decompression_alignment() == 16


def test_misaligned_input_or_output_is_refused_at_the_call() -> None:
    chunks = [b"a" * 1000, b"b" * 1000]
    encs = [ENCODERS["Zstd"](c) for c in chunks]
    buf, offs, sizes = _pack(encs, align=4)  # 4-aligned: enough for LZ4, not for Zstd
    assert offs[1] % 8 == 4
    codec = _codec("Zstd")
    before = streams.pending(0)
    with pytest.raises(RuntimeError, match=r"Input buffer is not aligned to the required "
                                           r"alignment of 8.*input 1"):
        codec.decode(nvcomp.as_arrays(buf, offs, sizes))
    assert streams.pending(0) == before  # nothing queued
    good, goffs, gsizes = _pack(encs, align=8)
    dst = DevBuf(4096)
    with pytest.raises(RuntimeError, match="Output buffer is not aligned"):
        codec.decode(nvcomp.as_arrays(good, goffs, gsizes),
                     out=nvcomp.as_arrays(dst, [0, 1004], [1000, 1000]))
    lz = [ENCODERS["LZ4"](c) for c in chunks]
    lbuf, loffs, lsizes = _pack(lz, align=4)
    assert _codec("LZ4").decode(nvcomp.as_arrays(lbuf, loffs, lsizes)).buffer_sizes == [1000] * 2


def test_entry_outside_its_buffer_is_refused_by_as_arrays() -> None:
    buf = DevBuf(100)
    with pytest.raises(ValueError, match=r"Entry 1 spans \[96, 96 \+ 8\), which does not fit in "
                                         r"the 100-byte buffer"):
        nvcomp.as_arrays(buf, [0, 96], [8, 8])
    with pytest.raises(ValueError, match="same length"):
        nvcomp.as_arrays(buf, [0], [8, 8])
    with pytest.raises(ValueError, match="empty sizes table"):
        nvcomp.as_arrays(buf, [], [])


def test_out_of_bounds_input_faults_naming_the_call_and_kills_the_device() -> None:
    data = b"x" * 1000
    enc = ENCODERS["Zstd"](data)
    buf = DevBuf(64, claim=8192)  # its interface claims more than was allocated (512 usable)
    buf.write(0, enc[:64])
    codec = _codec("Zstd")
    cfg = codec.decompression_config(codec.compression_config([1000, 1000]))
    res = codec.decode(nvcomp.as_arrays(buf, [0, 4096], [len(enc), len(enc)]),
                       decompression_config=cfg)  # queued: nothing checked yet
    with pytest.raises(RuntimeError, match=r"illegal memory access was encountered : code=700"
                                           r".*nvcomp.Codec.decode input 1"):
        res.buffer_sizes  # noqa: B018 - the synchronization that reports the fault
    # The context is dead: every call that touches the device raises the same error.
    for call in (lambda: _codec("Zstd"), lambda: nvcomp.as_arrays(DevBuf(64), [0], [8]),
                 lambda: codec.decode(nvcomp.as_arrays(buf, [0], [8])),
                 lambda: res.cpu()):
        with pytest.raises(RuntimeError, match="code=700"):
            call()


def test_out_slot_too_small_raises_value_error_at_the_call() -> None:
    chunks = [b"a" * 3000, b"b" * 3000]
    buf, offs, sizes = _pack([ENCODERS["LZ4"](c) for c in chunks])
    codec = _codec("LZ4")
    dst = DevBuf(8192)
    small = nvcomp.as_arrays(dst, [0, 4096], [4096, 1024])
    cfg = codec.decompression_config(codec.compression_config([3000, 3000]))
    with pytest.raises(ValueError, match=r"Output array 1 capacity 1024 is too small to hold the "
                                         r"data, 3000 bytes required"):
        codec.decode(nvcomp.as_arrays(buf, offs, sizes), out=small, decompression_config=cfg)
    with pytest.raises(ValueError, match="too small to hold the data"):  # sizes read from data
        codec.decode(nvcomp.as_arrays(buf, offs, sizes), out=small)


def test_counts_must_match() -> None:
    buf, offs, sizes = _pack([ENCODERS["Zstd"](b"z" * 100)] * 2)
    codec = _codec("Zstd")
    srcs = nvcomp.as_arrays(buf, offs, sizes)
    with pytest.raises(ValueError, match="built for batch with 3 arrays, got batch with 2"):
        codec.decode(srcs, decompression_config=codec.decompression_config(
            codec.compression_config([100] * 3)))
    dst = DevBuf(1024)
    with pytest.raises(ValueError, match=r"Output buffer count \(1\) does not match input buffer "
                                         r"count \(2\)"):
        codec.decode(srcs, out=nvcomp.as_arrays(dst, [0], [512]))
    with pytest.raises(ValueError, match=r"must be an nvcomp\.BatchArray"):
        codec.decode(srcs, out=dst)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
@pytest.mark.parametrize("algorithm", sorted(ENCODERS))
def test_corrupt_chunk_decodes_to_zero_bytes_and_poisons_its_slot(algorithm: str,
                                                                 damage: str) -> None:
    """nvCOMP documents undefined behaviour and reports no status per chunk: the emulator
    reports 0 decoded bytes and fills the slot, so only a caller that checks the sizes is
    right. The other chunks of the batch decode; the device stays usable."""
    chunks = [b"good " * 200, b"bad! " * 200, b"also good " * 100]
    encs = [ENCODERS[algorithm](c) for c in chunks]
    n = len(encs[1])
    encs[1] = b"\xff" * n if damage == "garbage" else encs[1][:n // 2]
    buf, offs, sizes = _pack(encs)
    codec = _codec(algorithm)
    slot = 2048
    dst = DevBuf(slot * 3)
    cfg = codec.decompression_config(codec.compression_config([len(c) for c in chunks]))
    res = codec.decode(nvcomp.as_arrays(buf, offs, sizes),
                       out=nvcomp.as_arrays(dst, [0, slot, 2 * slot], [slot] * 3),
                       decompression_config=cfg)
    assert res.buffer_sizes == [1000, 0, 1000]
    assert dst.read(0, 1000) == chunks[0] and dst.read(2 * slot, 1000) == chunks[2]
    assert dst.read(slot, slot) == b"\xdb" * slot
    streams.check_alive(0)


def test_chunk_larger_than_its_config_fails_like_corrupt_input() -> None:
    data = b"longer than the config says " * 50
    buf, offs, sizes = _pack([ENCODERS["Deflate"](data)])
    codec = _codec("Deflate")
    cfg = codec.decompression_config(codec.compression_config([100]))
    assert codec.decode(nvcomp.as_arrays(buf, offs, sizes),
                        decompression_config=cfg).buffer_sizes == [0]


def test_zstd_frame_without_content_size() -> None:
    """Decodes when a config gives the size; the size query cannot know it (0)."""
    data = bytes(range(256)) * 40
    frame = ENCODERS["Zstd"](data)
    fhd = frame[4]
    assert fhd >> 6 and fhd & 0x20  # numcodecs writes a single-segment frame with its size
    width = (1, 2, 4, 8)[fhd >> 6]
    no_size = frame[:4] + bytes([fhd & 0x04, 4 << 3]) + frame[5 + width:]  # 16 KiB window
    buf, offs, sizes = _pack([no_size])
    codec = _codec("Zstd")
    cfg = codec.decompression_config(codec.compression_config([len(data)]))
    res = codec.decode(nvcomp.as_arrays(buf, offs, sizes), decompression_config=cfg)
    assert res.buffer_sizes == [len(data)]
    assert codec.get_uncomp_buffer_size(nvcomp.as_array(buf)) == 0


def test_chunk_over_the_format_limit_is_refused() -> None:
    buf, offs, sizes = _pack([ENCODERS["Zstd"](b"z")])
    codec = _codec("Zstd")
    cfg = codec.decompression_config(codec.compression_config([1 << 31]))
    with pytest.raises(RuntimeError, match="Chunk size 2147483648 must not exceed 2147483647"):
        codec.decode(nvcomp.as_arrays(buf, offs, sizes), decompression_config=cfg)


def test_device_and_memory_mismatches() -> None:
    if streams.device_count() < 2:
        pytest.skip("one emulated device")
    buf, offs, sizes = _pack([ENCODERS["Zstd"](b"z" * 64)], device=1)
    with pytest.raises(ValueError, match="Input array and Codec device id mismatched"):
        _codec("Zstd", device=0).decode(nvcomp.as_arrays(buf, offs, sizes))
    with pytest.raises(ValueError, match="Codec CUDA stream and device id mismatched"):
        _codec("Zstd", device=0, stream=streams.new_stream(1, non_blocking=True))
    host = np.zeros(64, np.uint8)
    with pytest.raises(RuntimeError, match="not CUDA-accessible"):
        _codec("Zstd").decode(nvcomp.as_arrays(host, [0], [8]))


def test_python_list_is_not_a_batch() -> None:
    buf, _, _ = _pack([ENCODERS["Zstd"](b"z" * 64)])
    a = nvcomp.as_array(buf)
    with pytest.raises(TypeError, match=r"decode\(\): incompatible function arguments"):
        _codec("Zstd").decode([a, a])


def test_algorithms_and_arguments() -> None:
    assert _codec("zstd").get_required_decompression_alignment() == 8  # names: any case
    with pytest.raises(ValueError, match=r'^Unknown algorithm: "Foo"\.$'):
        nvcomp.Codec(algorithm="Foo")
    with pytest.raises(ValueError, match=r'Unknown algorithm: "GDeflate"\..*does not implement'):
        nvcomp.Codec(algorithm="GDeflate")
    with pytest.raises(ValueError, match=r'Unsupported argument: "stream"\. Did you mean '
                                         r'"cuda_stream"'):
        nvcomp.Codec(algorithm="Zstd", stream=0)
    with pytest.raises(TypeError, match="incompatible constructor arguments"):
        nvcomp.Codec("Zstd")
    with pytest.raises(RuntimeError, match="code=101"):
        nvcomp.Codec(algorithm="Zstd", device_id=streams.device_count())


# ---------------------------------------------------------------- the allocator


class _Block:
    def __init__(self, nbytes: int, device: int) -> None:
        self.alloc = memory.allocate(nbytes, device)
        self.ptr = self.alloc.ptr


def test_device_allocator_gives_each_decode_its_scratch() -> None:
    calls: list[tuple[int, int, int, int]] = []

    def allocator(nbytes: int, stream: Any) -> _Block:
        calls.append((nbytes, stream.ptr, stream.device, streams.current_device()))
        return _Block(nbytes, stream.device)

    nvcomp.set_device_allocator(allocator)
    s = streams.new_stream(0, non_blocking=True)
    buf, offs, sizes = _pack([ENCODERS["LZ4"](b"l" * 500)] * 3)
    codec = _codec("LZ4", stream=s)
    cfg = codec.decompression_config(codec.compression_config([500] * 3))
    dst = DevBuf(4096)
    out = nvcomp.as_arrays(dst, [0, 512, 1024], [500] * 3)
    assert codec.decode(nvcomp.as_arrays(buf, offs, sizes), out=out,
                        decompression_config=cfg).buffer_sizes == [500] * 3
    assert len(calls) == 1 and calls[0][0] > 0 and calls[0][1:] == (s, 0, 0)


@pytest.mark.parametrize("bad", ["too_small", "other_device", "freed"])
def test_a_bad_allocator_shows(bad: str) -> None:
    if bad == "other_device" and streams.device_count() < 2:
        pytest.skip("one emulated device")

    def allocator(nbytes: int, stream: Any) -> _Block:
        if bad == "too_small":
            return _Block(64, 0)
        if bad == "other_device":
            return _Block(nbytes, 1)
        b = _Block(nbytes, 0)
        memory.free(b.alloc)
        return b

    nvcomp.set_device_allocator(allocator)
    buf, offs, sizes = _pack([ENCODERS["Zstd"](b"z" * 64)])
    codec = _codec("Zstd")
    cfg = codec.decompression_config(codec.compression_config([64]))
    res = codec.decode(nvcomp.as_arrays(buf, offs, sizes), decompression_config=cfg)
    with pytest.raises(RuntimeError, match=r"code=700\..*scratch"):
        res.buffer_sizes  # noqa: B018


def test_allocator_result_without_ptr() -> None:
    nvcomp.set_device_allocator(lambda n, s: object())
    buf, offs, sizes = _pack([ENCODERS["Zstd"](b"z" * 64)])
    with pytest.raises(AttributeError, match="ptr"):
        _codec("Zstd").decode(nvcomp.as_arrays(buf, offs, sizes))


# ---------------------------------------------------------------- arrays


def test_host_and_device_arrays() -> None:
    host = np.arange(100, dtype=np.int32)
    h = nvcomp.as_array(host)
    assert h.buffer_kind == nvcomp.ArrayBufferKind.STRIDED_HOST
    assert (h.shape, h.strides, h.size, h.buffer_size, h.ndim) == ((100,), (4,), 100, 400, 1)
    assert np.array_equal(np.asarray(h), host)
    assert np.array_equal(np.from_dlpack(h), host)
    assert np.array_equal(np.asarray(nvcomp.from_dlpack(host)), host)
    d = h.cuda()
    assert d.buffer_kind == nvcomp.ArrayBufferKind.STRIDED_DEVICE
    assert d.__dlpack_device__() == (2, 0)
    assert d.__cuda_array_interface__["stream"] == 1  # CAI v3: the legacy stream is 1, never 0
    with pytest.raises(RuntimeError, match="device memory"):
        np.asarray(d)
    assert np.array_equal(np.asarray(d.cpu()), host)
    assert d.cpu().cuda() is not None and h.cpu() is h and d.cuda() is d


def test_batch_indexing() -> None:
    buf, offs, sizes = _pack([ENCODERS["Zstd"](bytes([i]) * 100) for i in range(3)])
    res = _codec("Zstd").decode(nvcomp.as_arrays(buf, offs, sizes))
    assert len(res) == 3
    assert bytes(np.asarray(res[-1].cpu())) == bytes([2]) * 100
    with pytest.raises(IndexError, match="BatchArray index out of range"):
        res[3]
    assert [a.buffer_size for a in res] == [100] * 3  # iteration by indexing
    with pytest.raises(TypeError, match="No constructor defined"):
        nvcomp.BatchArray()


def test_enums_behave_as_pybind11_ones() -> None:
    raw = nvcomp.BitstreamKind.RAW
    assert repr(raw) == "<BitstreamKind.RAW: 1>" and str(raw) == "BitstreamKind.RAW"
    assert raw != 1 and raw == nvcomp.BitstreamKind(1) and int(raw) == 1
    assert pickle.loads(pickle.dumps(raw)) == raw
    assert nvcomp.DELTA | nvcomp.RLE == 3 and nvcomp.DELTA == 1
    assert nvcomp.NONE is nvcomp.CascadedCoarseGrainedEncoding.NONE


# ---------------------------------------------------------------- with the CuPy stand-in


def test_the_gds_zarr_call_pattern_with_cupy_buffers() -> None:
    """As gds_zarr calls it: inputs carved from one CuPy buffer, outputs into fixed slots of
    one CuPy staging buffer, a config from known sizes, scratch from CuPy's pool."""
    cupy = pytest.importorskip("cupy")
    chunks = _chunks()
    encs = [ENCODERS["Zstd"](c) for c in chunks]
    offs, pos = [], 0
    for e in encs:
        offs.append(pos)
        pos += -(-len(e) // 16) * 16
    packed = np.zeros(pos, np.uint8)
    for o, e in zip(offs, encs, strict=True):
        packed[o:o + len(e)] = np.frombuffer(e, np.uint8)
    slot = 8192
    nvcomp.set_device_allocator(lambda nbytes, stream: cupy.cuda.alloc(nbytes))
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        src = cupy.asarray(packed)
        staging = cupy.empty(slot * len(chunks), cupy.uint8)
        codec = _codec("Zstd", stream=s.ptr)
        srcs = nvcomp.as_arrays(src, offs, [len(e) for e in encs], cuda_stream=s.ptr)
        dsts = nvcomp.as_arrays(staging, [i * slot for i in range(len(chunks))],
                                [slot] * len(chunks), cuda_stream=s.ptr)
        cfg = codec.decompression_config(codec.compression_config([len(c) for c in chunks]))
        res = codec.decode(srcs, out=dsts, decompression_config=cfg)
        assert np.asarray(res.buffer_sizes).tolist() == [len(c) for c in chunks]
        rows = staging.get()
        view = cupy.asarray(res[0])  # an nvCOMP array into CuPy, through the interface
        assert view.get().tobytes() == chunks[0]
    assert [rows[i * slot:i * slot + len(c)].tobytes() for i, c in enumerate(chunks)] == chunks
