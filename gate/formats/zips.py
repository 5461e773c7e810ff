"""Zip archives read strictly: one archive per file, the same one for every zip reader.

Python's `zipfile` and torch's reader (miniz) find the archive differently: zipfile shifts every
offset when data is prepended, miniz takes the central directory's offset as absolute, and both
take the last end record they see. A file can therefore hold two archives and show each reader a
different one. `layout` accepts only archives on which they cannot disagree: the end record ends the
file and is the last signature in it, the central directory sits exactly before it (nothing
prepended), every local header repeats its central entry, the entries tile the file from byte 0 to
the central directory with nothing between them, and no name occurs twice. Hand-written because the
point is to refuse what the readers tolerate; it reads headers only, never entry data.

The entry count and directory size are read from the end record first, so a hostile count is
refused before any parsing cost.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from typing import BinaryIO

from gate.errors import FormatError
from gate.formats import tiled_end

MAX_ENTRIES = 100_000
MAX_DIRECTORY_BYTES = 64 << 20
_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_DESCRIPTOR = b"PK\x07\x08"
_TAIL = 65_535 + 22  # the end record plus the longest possible archive comment
_METHODS = {0: "stored", 8: "deflate"}  # what both Python's zipfile and miniz read
_UNICODE_PATH_EXTRA = 0x7075  # zipfile (3.12+) renames entries from it; miniz ignores it


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    method: int
    size: int  # uncompressed
    compressed: int
    header: int  # offset of the local header
    data: int  # offset of the (compressed) data
    end: int  # offset after the data and its data descriptor

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


def _end(stream: BinaryIO) -> tuple[int, int, int, int]:
    """(end of the central directory, entry count, directory size, directory offset)."""
    size = stream.seek(0, io.SEEK_END)
    start = max(0, size - _TAIL)
    stream.seek(start)
    tail = stream.read(size - start)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        raise FormatError("no zip end record")
    disk, cd_disk, here, count, cd_size, cd_offset, comment = struct.unpack(
        "<HHHHIIH", tail[at + 4 : at + 22]
    )
    if at + 22 + comment != len(tail):
        raise FormatError("the zip end record does not end the file (bytes after the archive)")
    if disk or cd_disk or here != count:
        raise FormatError("multi-disk zip archives are not read")
    eocd = start + at
    cd_end = eocd
    locator = at - 20
    if locator >= 0 and tail[locator : locator + 4] == _ZIP64_LOCATOR:
        z_disk, z_offset, z_disks = struct.unpack("<IQI", tail[locator + 4 : locator + 20])
        if z_disk or z_disks != 1 or z_offset + 56 > size:
            raise FormatError("bad zip64 end record locator")
        stream.seek(z_offset)
        record = stream.read(56)
        if record[:4] != _ZIP64_EOCD:
            raise FormatError("the zip64 locator points at no zip64 end record")
        length, _made, _need, d1, d2, here64, count64, size64, offset64 = struct.unpack(
            "<QHHIIQQQQ", record[4:56]
        )
        if z_offset + 12 + length != start + locator:
            raise FormatError("the zip64 end record does not end where its locator begins")
        if d1 or d2 or here64 != count64:
            raise FormatError("multi-disk zip archives are not read")
        for small, big, marker in (
            (count, count64, 0xFFFF),
            (cd_size, size64, 0xFFFFFFFF),
            (cd_offset, offset64, 0xFFFFFFFF),
        ):
            if small not in (marker, big):
                raise FormatError("the zip end record and its zip64 record disagree")
        count, cd_size, cd_offset, cd_end = count64, size64, offset64, z_offset
    elif 0xFFFF in (count,) or 0xFFFFFFFF in (cd_size, cd_offset):
        raise FormatError("a zip64 marker without a zip64 end record")
    return cd_end, count, cd_size, cd_offset


def layout(stream: BinaryIO) -> tuple[Entry, ...]:
    """Every entry of a strictly formed archive, in file order; FormatError says what is wrong."""
    size = stream.seek(0, io.SEEK_END)
    cd_end, count, cd_size, cd_offset = _end(stream)
    if count > MAX_ENTRIES:
        raise FormatError(f"declares {count} entries (at most {MAX_ENTRIES} are read)")
    if cd_size > MAX_DIRECTORY_BYTES:
        raise FormatError(f"a central directory of {cd_size} bytes")
    if cd_offset + cd_size != cd_end:
        # zipfile would shift every offset by the difference; miniz would not.
        raise FormatError(
            f"data before or inside the archive: the central directory is declared at"
            f" {cd_offset} but ends at {cd_end}"
        )
    stream.seek(cd_offset)
    directory = stream.read(cd_size)
    entries: list[Entry] = []
    names: set[str] = set()
    raw_names: set[bytes] = set()
    pos = 0
    for _ in range(count):
        entry, raw, pos = _central(directory, pos, stream, size)
        if entry.name in names or raw in raw_names:
            raise FormatError(f"the name {entry.name!r} occurs twice")
        names.add(entry.name)
        raw_names.add(raw)
        entries.append(entry)
    if pos != len(directory):
        raise FormatError("the central directory holds more than its declared entries")
    entries.sort(key=lambda e: e.header)
    expected = tiled_end(((e.name, e.header, e.end) for e in entries), "entry")
    if expected != cd_offset:
        raise FormatError(f"bytes between the last entry ({expected}) and the directory")
    return tuple(entries)


def _central(directory: bytes, pos: int, stream: BinaryIO, size: int) -> tuple[Entry, bytes, int]:
    if directory[pos : pos + 4] != _CENTRAL or pos + 46 > len(directory):
        raise FormatError(f"a broken central directory entry at {pos}")
    (
        _made,
        _need,
        flags,
        method,
        _t,
        _d,
        crc,
        csize,
        usize,
        nlen,
        xlen,
        clen,
        disk,
        _ia,
        _ea,
        offset,
    ) = struct.unpack("<HHHHHHIIIHHHHHII", directory[pos + 4 : pos + 46])
    end = pos + 46 + nlen + xlen + clen
    if end > len(directory):
        raise FormatError(f"a central directory entry at {pos} runs past the directory")
    raw = directory[pos + 46 : pos + 46 + nlen]
    extra = _extras(directory[pos + 46 + nlen : pos + 46 + nlen + xlen])
    name = raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")
    if flags & 0x41:
        raise FormatError(f"entry {name!r} is encrypted")
    if method not in _METHODS:
        raise FormatError(f"entry {name!r} uses compression method {method}")
    if _UNICODE_PATH_EXTRA in extra:
        raise FormatError(f"entry {name!r} carries a second (Unicode path) name")
    zip64 = extra.get(0x0001, b"")
    usize, csize, offset, disk = _zip64_fields(zip64, usize, csize, offset, disk, name)
    if disk:
        raise FormatError(f"entry {name!r} is on another disk")
    data, end_of_entry = _local(stream, size, offset, raw, flags, method, crc, csize, usize, name)
    entry = Entry(name, method, usize, csize, offset, data, end_of_entry)
    return entry, raw, end


def _extras(blob: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    while i + 4 <= len(blob):
        kind, n = struct.unpack("<HH", blob[i : i + 4])
        if i + 4 + n > len(blob):
            raise FormatError("a broken extra field")
        if kind in out:
            raise FormatError(f"extra field {kind:#06x} occurs twice")
        out[kind] = blob[i + 4 : i + 4 + n]
        i += 4 + n
    if i != len(blob):
        raise FormatError("a broken extra field")
    return out


def _zip64_fields(
    blob: bytes, usize: int, csize: int, offset: int, disk: int, name: str
) -> tuple[int, int, int, int]:
    values = list(struct.unpack(f"<{len(blob) // 8}Q", blob[: len(blob) // 8 * 8]))
    out = []
    for value, marker in ((usize, 0xFFFFFFFF), (csize, 0xFFFFFFFF), (offset, 0xFFFFFFFF)):
        if value == marker:
            if not values:
                raise FormatError(f"entry {name!r}: a zip64 marker without its value")
            value = values.pop(0)
        out.append(value)
    return out[0], out[1], out[2], disk


def _local(
    stream: BinaryIO,
    size: int,
    offset: int,
    raw: bytes,
    flags: int,
    method: int,
    crc: int,
    csize: int,
    usize: int,
    name: str,
) -> tuple[int, int]:
    """(data offset, end of the entry) after checking the local header against the central."""
    stream.seek(offset)
    head = stream.read(30)
    if len(head) < 30 or head[:4] != _LOCAL:
        raise FormatError(f"entry {name!r}: no local header at {offset}")
    _need, lflags, lmethod, _t, _d, lcrc, lcsize, lusize, nlen, xlen = struct.unpack(
        "<HHHHHIIIHH", head[4:30]
    )
    lname = stream.read(nlen)
    lextra = _extras(stream.read(xlen))
    if lname != raw:
        raise FormatError(f"entry {name!r}: the local header names {lname!r}")
    if (lflags, lmethod) != (flags, method):
        raise FormatError(f"entry {name!r}: local and central headers disagree")
    data = offset + 30 + nlen + xlen
    end = data + csize
    if end > size:
        raise FormatError(f"entry {name!r} runs past the end of the file")
    big = 0x0001 in lextra or max(csize, usize) >= 0xFFFFFFFF
    if not flags & 0x08:
        lusize, lcsize, _, _ = _zip64_fields(lextra.get(0x0001, b""), lusize, lcsize, 0, 0, name)
        if (lcrc, lcsize, lusize) != (crc, csize, usize):
            raise FormatError(f"entry {name!r}: local and central sizes or CRC disagree")
        return data, end
    # A data descriptor follows the data, with or without its signature, 32- or 64-bit sizes.
    # The variant is the one whose values match and after which the next header begins.
    stream.seek(end)
    tail = stream.read(28)
    signed = tail[:4] == _DESCRIPTOR
    body = tail[4:] if signed else tail
    for fmt in ("<IQQ", "<III") if big else ("<III", "<IQQ"):
        need = struct.calcsize(fmt)
        after = body[need : need + 4]
        if (
            len(body) >= need
            and struct.unpack(fmt, body[:need]) == (crc, csize, usize)
            and after in (_LOCAL, _CENTRAL)
        ):
            return data, end + (4 if signed else 0) + need
    raise FormatError(f"entry {name!r}: its data descriptor disagrees with the directory")
