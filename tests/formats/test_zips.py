from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest

from gate.errors import FormatError
from gate.formats import loaders, zips


def archive(n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(n):
            z.writestr(f"f{i}", b"x")
    return buf.getvalue()


def test_reads_entries_from_the_end_record() -> None:
    assert [e.name for e in zips.layout(io.BytesIO(archive(3)))] == ["f0", "f1", "f2"]
    with pytest.raises(FormatError, match="no zip end record"):
        zips.layout(io.BytesIO(b"PK\x03\x04 not really a zip"))


def huge_zip64_claim(count: int) -> bytes:
    """A zip whose zip64 end record claims `count` entries (no such entries exist)."""
    zip64_eocd = b"PK\x06\x06" + struct.pack("<QHHIIQQQQ", 44, 45, 45, 0, 0, count, count, 0, 0)
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, 4, 1)
    eocd = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return b"PK\x03\x04" + zip64_eocd + locator + eocd


def test_zip64_claims_are_read_and_refused_before_parsing(tmp_path: Path) -> None:
    data = huge_zip64_claim(10**9)
    with pytest.raises(FormatError, match="declares 1000000000 entries"):
        zips.layout(io.BytesIO(data))
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    result = loaders.scan(str(path), "model.bin")
    assert "declares 1000000000 entries" in (result.error or "")
    assert result.pickle and result.executable  # fail closed: treated as a checkpoint


def test_ordinary_document_zip_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "docs.zip"
    path.write_bytes(archive(5))
    result = loaders.scan(str(path), "docs.zip")
    assert (result.pickle, result.structure, result.error) == (False, "zip", None)
