from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import blake3
import gguf as reference
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate import hashing
from gate.errors import FormatError
from gate.formats import gguf
from tests.helpers import write_gguf


def test_type_table_matches_the_reference() -> None:
    ref = {
        t.value: (t.name, *reference.GGML_QUANT_SIZES[t]) for t in reference.GGMLQuantizationType
    }
    assert {k: v for k, v in gguf.GGML_TYPES.items() if k in ref} == {
        k: v for k, v in ref.items() if k in gguf.GGML_TYPES
    }
    assert set(gguf.GGML_TYPES) <= set(ref)


def test_parse_matches_the_reference_reader(tmp_path: Path) -> None:
    q8 = reference.quants.quantize(
        np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32),
        reference.GGMLQuantizationType.Q8_0,
    )
    path = tmp_path / "m.gguf"
    w = reference.GGUFWriter(str(path), arch="llama")
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(1000)])
    w.add_array("nested", [[1, 2], [3]])
    w.add_float32("x", 0.5)
    w.add_tensor("w", np.ones((3, 32), np.float32))
    w.add_tensor("q", q8, raw_dtype=reference.GGMLQuantizationType.Q8_0)
    w.add_tensor("h", np.zeros((5,), np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data = path.read_bytes()
    header = gguf.parse_header(data, len(data))
    ours = {t.name: (t.dtype, header.data_start + t.begin, t.end - t.begin) for t in header.tensors}
    theirs = {
        t.name: (t.tensor_type.name, int(t.data_offset), int(t.n_bytes))
        for t in reference.GGUFReader(str(path)).tensors
    }
    assert ours == theirs
    assert header.metadata["tokenizer.ggml.tokens"] == ("array", 8, 1000)
    assert header.metadata["x"] == 0.5
    scan = hashing.scan(str(path), chunk_size=100)
    assert scan.tensors is not None
    assert {t.name: t.digest for t in scan.tensors} == {
        name: blake3.blake3(data[off : off + n]).hexdigest() for name, (_, off, n) in ours.items()
    }
    assert {t.name for t in scan.tensors if t.constant} == {"w", "h"}


def header(*parts: bytes, version: int = 3, n_tensors: int = 0, n_kv: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + b"".join(parts)


def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def tensor(name: str, dims: tuple[int, ...], ttype: int, offset: int) -> bytes:
    return (
        s(name)
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<IQ", ttype, offset)
    )


HOSTILE = {
    "bad-magic": (b"GGUG" + b"\0" * 40, "magic"),
    "version-1": (header(version=1) + b"\0" * 32, "version"),
    "huge-tensor-count": (header(n_tensors=2**63) + b"\0" * 64, "cannot fit"),
    "huge-kv-count": (header(n_kv=2**40) + b"\0" * 64, "cannot fit"),
    "huge-string": (header(struct.pack("<Q", 2**62), n_kv=1) + b"\0" * 64, "cannot fit"),
    "bad-utf8": (header(s(b"\xff\xfe"), n_kv=1) + b"\0" * 64, "UTF-8"),
    "unknown-type": (header(kv("k", 99, b""), n_kv=1) + b"\0" * 64, "unknown value type"),
    "huge-array": (
        header(kv("k", 9, struct.pack("<IQ", 4, 2**50)), n_kv=1) + b"\0" * 64,
        "cannot fit",
    ),
    "deep-array": (
        header(
            kv(
                "k",
                9,
                struct.pack("<IQ", 9, 1)
                + struct.pack("<IQ", 9, 1)
                + struct.pack("<IQ", 4, 1)
                + b"\0" * 4,
            ),
            n_kv=1,
        )
        + b"\0" * 64,
        "nested",
    ),
    "duplicate-key": (
        header(kv("k", 4, b"\0" * 4), kv("k", 4, b"\0" * 4), n_kv=2) + b"\0" * 64,
        "twice",
    ),
    "alignment-3": (
        header(kv("general.alignment", 4, struct.pack("<I", 3)), n_kv=1) + b"\0" * 64,
        "power of two",
    ),
    "too-many-dims": (
        header(s("t") + struct.pack("<I", 99) + b"\0" * 900, n_tensors=1) + b"\0" * 64,
        "dimensions",
    ),
    "unknown-ggml-type": (
        header(tensor("t", (4,), 77, 0), n_tensors=1) + b"\0" * 64,
        "unknown ggml type",
    ),
    "unaligned": (header(tensor("t", (4,), 0, 3), n_tensors=1) + b"\0" * 64, "aligned"),
    "past-end": (header(tensor("t", (1000,), 0, 0), n_tensors=1) + b"\0" * 64, "past the end"),
    "partial-block": (header(tensor("t", (33,), 8, 0), n_tensors=1) + b"\0" * 128, "multiple"),
    "overlap": (
        header(tensor("a", (8,), 0, 0), tensor("b", (8,), 0, 0), n_tensors=2) + b"\0" * 128,
        "overlaps|twice",
    ),
    "duplicate-tensor": (
        header(tensor("a", (8,), 0, 0), tensor("a", (8,), 0, 32), n_tensors=2) + b"\0" * 128,
        "twice",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_headers(case: str) -> None:
    data, match = HOSTILE[case]
    with pytest.raises(FormatError, match=match):
        gguf.parse_header(data, len(data))


def test_truncated_buffer_asks_for_more_but_truncated_file_fails(tmp_path: Path) -> None:
    data = write_gguf(tmp_path / "m.gguf").read_bytes()
    with pytest.raises(gguf.NeedMore):
        gguf.parse_header(data[:40], len(data))
    with pytest.raises(FormatError) as e:
        gguf.parse_header(data[:40], 40)
    assert not isinstance(e.value, gguf.NeedMore)


def test_truncated_file_is_reported_by_the_scan(tmp_path: Path) -> None:
    data = write_gguf(tmp_path / "m.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[:60])
    scan = hashing.scan(str(tmp_path / "cut.gguf"))
    assert scan.header_error is not None
    assert scan.tensors is None


@settings(max_examples=400, deadline=2000)
@given(st.binary(max_size=600), st.integers(0, 3))
def test_fuzz_gguf_header_ends_in_value_or_format_error(tail: bytes, n: int) -> None:
    data = header(n_tensors=n % 2, n_kv=n // 2) + tail
    with contextlib.suppress(FormatError):
        gguf.parse_header(data, len(data))
