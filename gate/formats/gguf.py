"""Bounded GGUF (v2/v3) header reader.

Hand-written rather than taken from the `gguf` package: its reader memory-maps the whole file
through numpy and trusts the counts it reads, while a gate reads files strangers wrote. Every
count and length here is checked against the bytes that remain (and a cap) before anything is
allocated, so a hostile header ends in a FormatError, never in a huge allocation or a hang.
Tests cross-check the type table and the parse against the `gguf` package.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import struct
from collections.abc import Callable
from typing import Any

from gate.errors import FormatError
from gate.formats import Plan, plan_of

MAX_HEADER_BYTES = 64 << 20  # vocabularies of 250k tokens and chat templates fit easily
MAX_STRING_BYTES = 1 << 20
MAX_COUNT = 1 << 24  # key-value pairs, tensors and array items
MAX_DIMS = 8
MAX_NESTING = 2  # arrays of arrays
DEFAULT_ALIGNMENT = 32

# ggml tensor types: (block size in elements, bytes per block). Source: ggml's type traits
# (ggml/src/ggml.c), as exported by gguf-py's GGML_QUANT_SIZES; a test checks every row.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

# GGUF metadata value types: struct format of scalars (8 = string, 9 = array).
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_MIN_VALUE_BYTES = {**{k: struct.calcsize(v) for k, v in _SCALARS.items()}, 8: 8, 9: 12}


class NeedMore(FormatError):
    """The buffer ends inside the header, but the file goes on."""


@dataclasses.dataclass(frozen=True)
class GgufTensor:
    name: str
    dtype: str  # ggml type name, e.g. Q4_K
    shape: tuple[int, ...]
    begin: int  # offsets relative to the start of the data section
    end: int
    block_bytes: int  # bytes per quantisation block (element size for plain types)


@dataclasses.dataclass(frozen=True)
class GgufHeader:
    version: int
    metadata: dict[str, Any]  # scalars and strings; arrays as ("array", item type, count)
    tensors: tuple[GgufTensor, ...]  # sorted by offset
    alignment: int
    data_start: int  # absolute file offset of the data section


ReadAt = Callable[[int, int], bytes]  # (offset, length) -> bytes of the file


class _Cursor:
    def __init__(self, buf: bytes, file_size: int, read_at: ReadAt | None = None) -> None:
        self.buf = buf
        self.file_size = file_size
        self.read_at = read_at
        self.pos = 0

    def ensure(self, end: int, what: str) -> None:
        """Make buf reach `end`: read more of the file (doubling, so the whole parse reads each
        byte about once), or raise NeedMore / FormatError."""
        if end <= len(self.buf):
            return
        limit = min(self.file_size, MAX_HEADER_BYTES)
        if end > limit:
            raise FormatError(f"{what} at byte {self.pos} runs past the header limit or file")
        if self.read_at is None:
            raise NeedMore(what)
        want = min(limit, max(end, 2 * len(self.buf), 1 << 16))
        more = self.read_at(len(self.buf), want - len(self.buf))
        self.buf += more
        if len(self.buf) < end:
            raise FormatError(f"the file ended inside the header (at byte {len(self.buf)})")

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        self.ensure(end, what)
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def count(self, what: str, min_item_bytes: int) -> int:
        n: int = self.unpack("<Q", what)
        remaining = min(self.file_size, MAX_HEADER_BYTES) - self.pos
        if n > MAX_COUNT or n * min_item_bytes > remaining:
            raise FormatError(f"{what} {n} cannot fit in the {remaining} bytes that remain")
        return n

    def string(self, what: str) -> str:
        n = self.count(f"{what} length", 1)
        if n > MAX_STRING_BYTES:
            raise FormatError(f"{what} of {n} bytes is over the {MAX_STRING_BYTES}-byte limit")
        try:
            return self.take(n, what).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{what} at byte {self.pos - n} is not valid UTF-8") from None


def _value(c: _Cursor, vtype: int, key: str, depth: int = 0) -> Any:
    if vtype in _SCALARS:
        return c.unpack(_SCALARS[vtype], f"value of {key}")
    if vtype == 8:
        return c.string(f"value of {key}")
    if vtype == 9:
        if depth >= MAX_NESTING:
            raise FormatError(f"{key}: arrays nested deeper than {MAX_NESTING}")
        itype = c.unpack("<I", f"array type of {key}")
        if itype not in _MIN_VALUE_BYTES:
            raise FormatError(f"{key}: unknown array item type {itype}")
        n = c.count(f"{key} item count", _MIN_VALUE_BYTES[itype])
        if itype in _SCALARS:  # fixed-size items: skip them in one step, not n Python iterations
            c.take(n * _MIN_VALUE_BYTES[itype], f"items of {key}")
        elif itype == 8:
            _skip_strings(c, n, key)
        else:
            for _ in range(n):  # bounded: n items must fit in the remaining bytes
                _value(c, itype, key, depth + 1)
        return ("array", itype, n)
    raise FormatError(f"{key}: unknown value type {vtype}")


def _skip_strings(c: _Cursor, n: int, key: str) -> None:
    """Validate n length-prefixed UTF-8 strings (vocabularies): the hot loop of a GGUF header."""
    buf, pos, unpack = c.buf, c.pos, struct.unpack_from
    limit = min(c.file_size, MAX_HEADER_BYTES)
    for _ in range(n):
        if pos + 8 > len(buf):
            c.pos = pos
            c.ensure(pos + 8, f"string length in {key}")  # reads more, or raises
            buf = c.buf
        (length,) = unpack("<Q", buf, pos)
        end = pos + 8 + length
        if length > MAX_STRING_BYTES or end > limit:
            raise FormatError(f"string of {length} bytes in {key} at byte {pos} cannot fit")
        if end > len(buf):
            c.pos = pos + 8
            c.ensure(end, f"string in {key}")
            buf = c.buf
        try:
            buf[pos + 8 : end].decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"string in {key} at byte {pos + 8} is not valid UTF-8") from None
        pos = end
    c.pos = pos


def parse_header(buf: bytes, file_size: int, read_at: ReadAt | None = None) -> GgufHeader:
    """Parse and validate a GGUF header from the file's first bytes.

    With read_at, more of the file is read as the parse needs it (one pass). Without it, raises
    NeedMore when buf ends inside the header (call again with more bytes). FormatError when the
    header is invalid.
    """
    c = _Cursor(buf, file_size, read_at)
    if c.take(4, "magic") != b"GGUF":
        raise FormatError("not a GGUF file (bad magic)")
    version = c.unpack("<I", "version")
    if version not in (2, 3):
        raise FormatError(f"unsupported GGUF version {version} (2 and 3 are read)")
    n_tensors = c.count("tensor count", 8 + 4 + 4 + 8)
    n_kv = c.count("metadata count", 8 + 4 + 1)
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = c.string("metadata key")
        if key in metadata:
            raise FormatError(f"metadata key {key!r} appears twice")
        metadata[key] = _value(c, c.unpack("<I", f"type of {key}"), key)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise FormatError(f"general.alignment {alignment!r} is not a power of two")
    infos = []
    names: set[str] = set()
    for _ in range(n_tensors):
        name = c.string("tensor name")
        if name in names:
            raise FormatError(f"tensor {name!r} appears twice")
        names.add(name)
        n_dims = c.unpack("<I", f"dimension count of {name}")
        if n_dims > MAX_DIMS:
            raise FormatError(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
        dims = tuple(c.unpack("<Q", f"dimension of {name}") for _ in range(n_dims))
        ttype = c.unpack("<I", f"type of {name}")
        offset = c.unpack("<Q", f"offset of {name}")
        infos.append((name, dims, ttype, offset))
    data_start = -(-c.pos // alignment) * alignment
    tensors = [_tensor(*info, alignment, file_size - data_start) for info in infos]
    tensors.sort(key=lambda t: (t.begin, t.end))
    for a, b in itertools.pairwise(tensors):
        if b.begin < a.end:
            raise FormatError(f"tensor {b.name!r} overlaps tensor {a.name!r}")
    return GgufHeader(version, metadata, tuple(tensors), alignment, data_start)


def _tensor(
    name: str, dims: tuple[int, ...], ttype: int, offset: int, alignment: int, data_len: int
) -> GgufTensor:
    if ttype not in GGML_TYPES:
        raise FormatError(f"tensor {name!r} has unknown ggml type {ttype}")
    type_name, block, block_bytes = GGML_TYPES[ttype]
    elements = math.prod(dims)
    if elements % block:
        raise FormatError(f"tensor {name!r}: {elements} elements is not a multiple of {block}")
    nbytes = elements // block * block_bytes
    if offset % alignment:
        raise FormatError(f"tensor {name!r} offset {offset} is not aligned to {alignment}")
    if offset + nbytes > data_len:
        raise FormatError(f"tensor {name!r} ends past the end of the file")
    return GgufTensor(name, type_name, dims, offset, offset + nbytes, block_bytes)


class IncrementalHeader:
    """Parses a GGUF header once, at the first chunk, reading the rest of it from the file as
    the parse needs it (bounded by MAX_HEADER_BYTES). Parsing at doubling buffer sizes cost
    a re-parse per doubling: a 52 MB header of nested arrays took 37 s and 412 MB."""

    def __init__(self, size: int, fd: int) -> None:
        self.size = size
        self.fd = fd
        self.header: GgufHeader | None = None
        self.error: str | None = None

    def feed(self, chunk: memoryview, offset: int) -> bool:
        """Parse the header (first call); True once parsed or failed."""
        if self.header is not None or self.error is not None:
            return True

        def read_at(at: int, n: int) -> bytes:
            return os.pread(self.fd, n, at)

        try:
            self.header = parse_header(bytes(chunk), self.size, read_at)
        except FormatError as e:
            self.error = e.message
        return True

    @property
    def plan(self) -> Plan | None:
        h = self.header
        return None if h is None else plan_of(h.tensors, h.data_start, lambda t: t.block_bytes)
