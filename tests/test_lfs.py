from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate import lfs
from gate.errors import FormatError
from tests.helpers import pointer, sha

GOOD = pointer(b"hello")


def test_parse_valid_pointer() -> None:
    p = lfs.parse(GOOD)
    assert p == lfs.Pointer(oid=sha(b"hello"), size=5)
    assert lfs.looks_like_pointer(GOOD)


def test_extension_keys_allowed() -> None:
    text = GOOD.replace(b"oid", b"ext-0-foo sha256:" + b"0" * 64 + b"\noid")
    assert lfs.parse(text).size == 5


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (GOOD[:-1], "newline"),
        (GOOD.replace(b"spec/v1", b"spec/v9"), "version"),
        (GOOD.replace(b"sha256:", b"sha1:"), "oid"),
        (GOOD.replace(b"size 5", b"size -5"), "size"),
        (GOOD.replace(b"size 5", b"size 05"), "size"),
        (GOOD.replace(b"size 5", b"size 5\nsize 6"), "duplicate"),
        (b"oid sha256:x\nversion https://git-lfs.github.com/spec/v1\n", "first key"),
        (GOOD + b"x" * 1024, "1024"),
        (GOOD.replace(b"oid ", b"oid  "), "oid"),
        (b"version https://git-lfs.github.com/spec/v1\n\n", "key value"),
    ],
)
def test_malformed_pointers(data: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        lfs.parse(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1100))
def test_fuzz_pointer_parser(data: bytes) -> None:
    try:
        p = lfs.parse(b"version https://git-lfs.github.com/spec/v1\n" + data)
    except FormatError:
        return
    assert len(p.oid) == 64
    assert p.size >= 0
