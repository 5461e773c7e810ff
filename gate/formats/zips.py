"""How many entries a zip declares, read from its end record before any zip parser sees it.

`zipfile.ZipFile` parses the whole central directory when it opens an archive, so a hostile zip
declaring millions of entries costs memory and time before a caller can count them. The end of
central directory record (and its zip64 variant) states the count in the last 64 kB of the file.
"""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

MAX_ENTRIES = 100_000
_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_TAIL = 65_536 + 22  # the EOCD record plus the longest possible archive comment


def declared_entries(stream: BinaryIO) -> int | None:
    """The entry count the archive declares, or None when no end record is found."""
    size = stream.seek(0, io.SEEK_END)
    start = max(0, size - _TAIL)
    stream.seek(start)
    tail = stream.read(size - start)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        return None
    count: int = struct.unpack("<H", tail[at + 10 : at + 12])[0]
    locator = at - 20
    if count == 0xFFFF and locator >= 0 and tail[locator : locator + 4] == _ZIP64_LOCATOR:
        (offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
        if offset + 56 > size:
            return None
        stream.seek(offset)
        record = stream.read(56)
        if record[:4] != _ZIP64_EOCD:
            return None
        (count,) = struct.unpack("<Q", record[32:40])
    return count


def too_many_entries(stream: BinaryIO) -> str | None:
    """Why the archive must not be opened (no end record, or over MAX_ENTRIES), else None."""
    count = declared_entries(stream)
    stream.seek(0)
    if count is None:
        return "no zip end record"
    if count > MAX_ENTRIES:
        return f"declares {count} entries (at most {MAX_ENTRIES} are read)"
    return None
