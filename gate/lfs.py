"""Git LFS pointer files: the usual content of a weight file in a CI checkout without LFS."""

from __future__ import annotations

import dataclasses
import re

from gate.errors import FormatError

# The LFS spec caps pointer files below 1024 bytes; anything larger is content, not a pointer.
MAX_POINTER_BYTES = 1024
_VERSIONS = (b"https://git-lfs.github.com/spec/v1", b"https://hawser.github.com/spec/v1")
_PREFIX = b"version https://"
_KEY = re.compile(rb"^[a-z0-9.-]+$")


@dataclasses.dataclass(frozen=True)
class Pointer:
    oid: str  # sha256 hex of the content
    size: int


def looks_like_pointer(prefix: bytes) -> bool:
    """Whether a file starting with prefix claims to be an LFS pointer."""
    return prefix.startswith(_PREFIX)


def parse(data: bytes) -> Pointer:
    """Parse a pointer strictly; raise FormatError naming the bad line."""
    if len(data) >= MAX_POINTER_BYTES:
        raise FormatError(f"pointer file is {len(data)} bytes; the LFS spec caps it below 1024")
    if not data.endswith(b"\n"):
        raise FormatError("pointer file does not end with a newline")
    fields: dict[bytes, bytes] = {}
    for number, line in enumerate(data[:-1].split(b"\n"), start=1):
        key, sep, value = line.partition(b" ")
        if not sep or not _KEY.match(key) or not value:
            raise FormatError(f"line {number}: expected `key value`")
        if key in fields:
            raise FormatError(f"line {number}: duplicate key `{key.decode()}`")
        if number == 1 and key != b"version":
            raise FormatError("line 1: the first key must be `version`")
        fields[key] = value
    if fields.get(b"version") not in _VERSIONS:
        raise FormatError("unknown pointer version")
    oid = fields.get(b"oid", b"")
    if not re.fullmatch(rb"sha256:[0-9a-f]{64}", oid):
        raise FormatError("`oid` must be sha256: followed by 64 lowercase hex digits")
    size = fields.get(b"size", b"")
    if not re.fullmatch(rb"0|[1-9][0-9]{0,18}", size):
        raise FormatError("`size` must be a non-negative decimal integer")
    return Pointer(oid=oid[len(b"sha256:") :].decode(), size=int(size))
