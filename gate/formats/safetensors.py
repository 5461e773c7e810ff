"""Strict safetensors header validation.

Hand-written rather than delegated to the `safetensors` package: the gate must validate the
header from the same buffers it hashes (one read per byte), cap sizes before allocating, and
report *which* rule a lying header broke. Tests use the `safetensors` package as the oracle.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any

from gate.errors import FormatError
from gate.formats import Plan, plan_of, tiled_end

# Same cap as the reference implementation, so every file it accepts is accepted here.
MAX_HEADER_BYTES = 100_000_000
# The reference implementation has no tensor cap; the gate keeps a record per tensor, so a
# 100 MB header of zero-size tensors (~1.5M) would cost gigabytes. The largest single-file
# checkpoints hold ~100k tensors (mixtures of hundreds of experts).
MAX_TENSORS = 131_072
MAX_INT_DIGITS = 20  # u64: offsets and dimensions never need more
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets relative to the start of the data section
    end: int


@dataclasses.dataclass(frozen=True)
class Header:
    header_len: int
    metadata: dict[str, str]
    tensors: tuple[TensorInfo, ...]  # sorted by begin offset

    @property
    def data_start(self) -> int:
        return 8 + self.header_len


def header_length(first8: bytes, file_size: int) -> int:
    """Validate the 8-byte length prefix against the cap and the file size."""
    if len(first8) < 8:
        raise FormatError(f"file is {file_size} bytes; a safetensors file has an 8-byte prefix")
    (n,) = struct.unpack("<Q", first8)
    if n > MAX_HEADER_BYTES:
        raise FormatError(f"header length {n} is over the {MAX_HEADER_BYTES}-byte cap")
    if n > file_size - 8:
        raise FormatError(f"header length {n} runs past the end of the {file_size}-byte file")
    if n < 2:
        raise FormatError(f"header length {n} is too short for a JSON object")
    return int(n)


def _reject_constant(name: str) -> None:
    raise FormatError(f"non-JSON number {name}")


def bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:  # before int(): thousands of digits cost seconds
        raise FormatError(f"an integer of {len(digits)} digits")
    return int(digits)


def valid_text(s: str) -> bool:
    """Whether a string is valid Unicode: JSON `\\ud800` escapes can make lone surrogates,
    which the reference parser refuses and no UTF-8 output can carry."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def strict_json(text: str, max_objects: int | None = None) -> Any:
    """Parse untrusted JSON: duplicate keys, NaN/Infinity, integers of over 20 digits, lone
    surrogates in keys, and more than max_objects objects are FormatErrors, like bad syntax."""
    count = [0]

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        count[0] += 1
        if max_objects is not None and count[0] > max_objects:
            raise FormatError(f"more than {max_objects} JSON objects")
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise FormatError(f"duplicate key {k!r}")
            if not valid_text(k):
                shown = k.encode("utf-8", "backslashreplace").decode()
                raise FormatError(f"a key that is not valid Unicode: {shown}")
            out[k] = v
        return out

    try:
        return json.loads(
            text, object_pairs_hook=pairs, parse_constant=_reject_constant, parse_int=bounded_int
        )
    except json.JSONDecodeError as e:
        raise FormatError(f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise FormatError("JSON nested too deeply") from None


def parse_header(raw: bytes, file_size: int) -> Header:
    """Validate a header (the bytes after the length prefix) against the file size."""
    if not raw.startswith(b"{"):
        raise FormatError("header does not start with `{`")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"header is not valid UTF-8 (byte {8 + e.start})") from None
    try:  # the format pads the header with spaces; one object per tensor, and the header
        doc = strict_json(text.rstrip(" "), max_objects=MAX_TENSORS + 2)
    except FormatError as e:
        raise FormatError(f"header: {e.message}") from None
    if not isinstance(doc, dict):
        raise FormatError("header is not a JSON object")
    data_len = file_size - 8 - len(raw)
    metadata = doc.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise FormatError("__metadata__ must map strings to strings")
    if not all(valid_text(v) for v in metadata.values()):
        raise FormatError("__metadata__ holds a value that is not valid Unicode")
    tensors = sorted(
        (_entry(name, entry, data_len) for name, entry in doc.items()),
        key=lambda t: (t.begin, t.end),
    )
    expected = tiled_end(((t.name, t.begin, t.end) for t in tensors), "tensor")
    if expected != data_len:
        raise FormatError(
            f"tensors cover {expected} bytes but the data section holds {data_len} bytes"
        )
    return Header(header_len=len(raw), metadata=metadata, tensors=tuple(tensors))


def _entry(name: str, entry: Any, data_len: int) -> TensorInfo:
    # Extra keys are tolerated, as the reference implementation does; the header size is capped.
    if not isinstance(entry, dict) or not set(entry) >= _ENTRY_KEYS:
        raise FormatError(f"tensor {name!r} must have dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BITS:
        raise FormatError(f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise FormatError(f"tensor {name!r} has a shape that is not a list of non-negative ints")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise FormatError(f"tensor {name!r} has data_offsets that are not [begin, end]")
    begin, end = offsets
    if end > data_len:
        raise FormatError(f"tensor {name!r} ends at {end}, past the {data_len}-byte data section")
    span = end - begin
    bits = _bits(shape, DTYPE_BITS[dtype], 8 * span)
    if bits is None or bits % 8 or bits // 8 != span:
        needs = "more bytes than the file holds" if bits is None else f"{bits / 8:g} bytes"
        raise FormatError(
            f"tensor {name!r}: {dtype} of {len(shape)} dimensions needs {needs} but its offsets"
            f" span {span}"
        )
    return TensorInfo(name, dtype, tuple(shape), begin, end)


def _bits(shape: list[int], element_bits: int, limit: int) -> int | None:
    """Bits of a tensor, or None once the product passes limit: one dimension at a time, so a
    shape of many huge dimensions costs linear time and never builds a huge number."""
    if 0 in shape:
        return 0
    total = element_bits
    for d in shape:
        total *= d
        if total > limit:
            return None
    return total


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _width(t: TensorInfo) -> int:
    return DTYPE_BITS[t.dtype] // 8


class IncrementalHeader:
    """Collects the safetensors header from the first chunks, then plans the tensor stream."""

    def __init__(self, size: int, fd: int = -1) -> None:
        self.size = size
        self.raw = bytearray()
        self.length: int | None = None
        self.header: Header | None = None
        self.error: str | None = None

    def feed(self, chunk: memoryview, offset: int) -> bool:
        """Take header bytes from a chunk; True once the header is parsed (or has failed)."""
        if self.header is not None or self.error is not None:
            return True
        try:
            if self.length is None:
                need = 8 - len(self.raw)
                self.raw += chunk[:need]
                if len(self.raw) < 8:
                    return offset + len(chunk) >= self.size and self._fail("file too short")
                self.length = header_length(bytes(self.raw), self.size)
                self.raw.clear()
                chunk, offset = chunk[need:], offset + need
            take = self.length - len(self.raw)
            self.raw += chunk[:take]
            if len(self.raw) < self.length:
                return False
            self.header = parse_header(bytes(self.raw), self.size)
            self.raw = bytearray()
        except FormatError as e:
            return self._fail(e.message)
        return True

    def _fail(self, message: str) -> bool:
        self.error = message
        return True

    @property
    def plan(self) -> Plan | None:
        h = self.header
        return None if h is None else plan_of(h.tensors, h.data_start, _width)
