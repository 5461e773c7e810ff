from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import SafetensorError
from safetensors.numpy import load_file

from gate.errors import FormatError
from gate.formats import safetensors as sf
from tests.helpers import raw_st, tensors, write_st


def parse_file(data: bytes) -> sf.Header:
    n = sf.header_length(data[:8], len(data))
    return sf.parse_header(data[8 : 8 + n], len(data))


def test_real_file_parses(tmp_path: Path) -> None:
    path = write_st(tmp_path / "m.safetensors")
    header = parse_file(path.read_bytes())
    assert {t.name for t in header.tensors} == set(tensors())
    assert header.tensors[0].begin == 0
    assert header.tensors[-1].end == path.stat().st_size - header.data_start


ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
LYING = {
    "overlap": ({"a": ENTRY, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, 8),
    "gap": ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, 8),
    "past-end": ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 8),
    "short-cover": ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 8),
    "shape-bytes": ({"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 8]}}, 8),
    "unknown-dtype": ({"a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 8]}}, 8),
    "negative-shape": ({"a": {"dtype": "U8", "shape": [-8], "data_offsets": [0, 8]}}, 8),
    "bool-shape": ({"a": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}}, 1),
    "reversed-offsets": ({"a": {"dtype": "U8", "shape": [0], "data_offsets": [8, 0]}}, 8),
    "missing-key": ({"a": {"dtype": "F32", "shape": [2]}}, 8),
    "metadata-not-strings": ({"__metadata__": {"a": 1}, "a": ENTRY}, 8),
    "not-object": ([1, 2], 0),
    "sub-byte-misaligned": ({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, 2),
}


@pytest.mark.parametrize("name", sorted(LYING))
def test_lying_headers_rejected_like_the_reference(tmp_path: Path, name: str) -> None:
    header, size = LYING[name]
    data = raw_st(header, b"\0" * size)
    with pytest.raises(FormatError):
        parse_file(data)
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    with pytest.raises(SafetensorError):  # the reference implementation refuses it too
        load_file(str(path))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x01\x00", "8-byte prefix"),
        (struct.pack("<Q", sf.MAX_HEADER_BYTES + 1) + b"{}", "cap"),
        (struct.pack("<Q", 100) + b"{}", "past the end"),
        (struct.pack("<Q", 1) + b"{", "too short"),
    ],
)
def test_length_prefix(data: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        sf.header_length(data[:8], len(data))


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"[1] ", "start with"),
        (b'{"a": \xff}', "UTF-8"),
        (b'{"a": 1,}', "not valid JSON"),
        (b'{"a": NaN}', "non-JSON"),
        (b'{"a": {}, "a": {}}', "duplicate"),
        (b"{" + b'"a":' * 1 + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested|not valid|exactly"),
    ],
)
def test_header_json(raw: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        sf.parse_header(raw, 8 + len(raw))


def test_extra_entry_keys_tolerated_like_the_reference() -> None:
    raw = json.dumps({"a": {**ENTRY, "x": 1}}).encode()
    assert sf.parse_header(raw, 8 + len(raw) + 8).tensors[0].name == "a"


def test_padding_and_zero_sized_tensors_accepted() -> None:
    header = {
        "empty": {"dtype": "F32", "shape": [0, 4], "data_offsets": [0, 0]},
        "a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
        "f4": {"dtype": "F4", "shape": [4], "data_offsets": [4, 6]},
    }
    raw = json.dumps(header).encode() + b"   "
    parsed = sf.parse_header(raw, 8 + len(raw) + 6)
    assert [t.name for t in parsed.tensors] == ["empty", "a", "f4"]


def test_header_of_numpy_dtypes_round_trip(tmp_path: Path) -> None:
    data = {
        "f16": np.zeros((3, 5), np.float16),
        "i64": np.arange(7, dtype=np.int64),
        "b": np.array([True, False]),
        "u8": np.ones(0, np.uint8),
    }
    path = write_st(tmp_path / "d.safetensors", data)
    got = {t.name: (t.dtype, t.shape) for t in parse_file(path.read_bytes()).tensors}
    assert got == {
        "f16": ("F16", (3, 5)),
        "i64": ("I64", (7,)),
        "b": ("BOOL", (2,)),
        "u8": ("U8", (0,)),
    }


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_bytes_end_in_value_or_format_error(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse_file(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=10),
        json_values
        | st.fixed_dictionaries(
            {
                "dtype": st.sampled_from([*sf.DTYPE_BITS, "X"]),
                "shape": st.lists(st.integers(-2, 2**40), max_size=3),
                "data_offsets": st.lists(st.integers(-2, 2**40), max_size=3),
            }
        ),
        max_size=5,
    ),
    st.integers(0, 64),
)
def test_fuzz_structured_headers(header: dict[str, object], data_len: int) -> None:
    raw = json.dumps(header).encode()
    try:
        parsed = sf.parse_header(raw, 8 + len(raw) + data_len)
    except FormatError:
        return
    covered = sum(t.end - t.begin for t in parsed.tensors)
    assert covered == data_len
