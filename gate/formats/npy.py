""".npy headers: where the array data starts, and whether numpy.load would unpickle it.

`numpy.load(allow_pickle=True)` unpickles the data of an array whose dtype holds Python objects:
`'|O'`, `'O'`, `'object'`, a structured dtype with an object field, a sub-array of objects ... The
header is a Python dict literal, read here with `ast.literal_eval` (literals only, bounded in
size and depth); the dtype description is accepted as free of objects only in numpy's own
canonical spellings (what `np.save` writes), so an unusual spelling is treated as possibly holding
objects, never as plain data. numpy itself is not imported: the pre-commit environment stays small.
"""

from __future__ import annotations

import ast
import re
import struct
from typing import Any, BinaryIO

from gate.errors import FormatError

MAGIC = b"\x93NUMPY"
MAX_HEADER_BYTES = 1 << 16  # numpy writes a few hundred bytes; it refuses over 10,000 by default
MAX_FIELDS = 4096
MAX_DEPTH = 8
# dtype.str for every non-object scalar type: bool, ints, floats, complex, bytes, str, void,
# datetimes and timedeltas (with their unit).
_PLAIN = re.compile(
    r"[<>|=]?(?:b1|[iu][1248]|f(?:2|4|8|10|12|16)|c(?:8|16|20|24|32)|[SUV]\d+|"
    r"[mM]8(?:\[\d*(?:Y|M|W|D|h|m|s|ms|us|ns|ps|fs|as)\])?)"
)


def header(stream: BinaryIO) -> tuple[int, Any]:
    """(offset of the array data, the `descr` value); FormatError when numpy could not read it."""
    try:
        return _header(stream)
    except FormatError:
        raise
    except Exception as e:  # the stream decodes untrusted bytes (a zip entry's CRC, inflate)
        raise FormatError(f"the .npy data cannot be read ({type(e).__name__})") from None


def _header(stream: BinaryIO) -> tuple[int, Any]:
    stream.seek(0)
    head = stream.read(len(MAGIC) + 2)
    if head[: len(MAGIC)] != MAGIC or len(head) < len(MAGIC) + 2:
        raise FormatError("not a .npy file")
    major = head[len(MAGIC)]
    if major not in (1, 2, 3):
        raise FormatError(f".npy format version {major} is not known")
    width = 2 if major == 1 else 4
    raw = stream.read(width)
    if len(raw) != width:
        raise FormatError("the .npy header is cut short")
    (n,) = struct.unpack("<H" if width == 2 else "<I", raw)
    if n > MAX_HEADER_BYTES:
        raise FormatError(f"a .npy header of {n} bytes (at most {MAX_HEADER_BYTES} are read)")
    text = stream.read(n)
    if len(text) != n:
        raise FormatError("the .npy header is cut short")
    try:
        doc = ast.literal_eval(text.decode("utf-8" if major == 3 else "latin-1"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        raise FormatError("the .npy header is not a Python literal") from None
    if not isinstance(doc, dict) or set(doc) != {"descr", "fortran_order", "shape"}:
        raise FormatError("the .npy header is not numpy's {descr, fortran_order, shape}")
    return len(MAGIC) + 2 + width + n, doc["descr"]


def has_objects(descr: Any) -> bool:
    """Whether an array of this dtype description is stored as a pickle. Anything that is not a
    recognised object-free description counts as holding objects (fail closed)."""
    try:
        return _objects(descr, 0, [0])
    except _Unknown:
        return True


class _Unknown(Exception):
    pass


def _objects(descr: Any, depth: int, fields: list[int]) -> bool:
    if depth > MAX_DEPTH:
        raise _Unknown
    if isinstance(descr, str):
        if _PLAIN.fullmatch(descr):
            return False
        if re.fullmatch(r"[<>|=]?O\d*", descr):
            return True
        raise _Unknown
    if isinstance(descr, tuple) and len(descr) == 2:  # (base, shape): a sub-array
        return _objects(descr[0], depth + 1, fields)
    if isinstance(descr, list):  # structured: [(name, descr[, shape]), ...]
        found = False
        for field in descr:
            fields[0] += 1
            if fields[0] > MAX_FIELDS or not isinstance(field, tuple) or len(field) not in (2, 3):
                raise _Unknown
            found |= _objects(field[1], depth + 1, fields)
        return found
    raise _Unknown
