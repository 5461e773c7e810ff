"""Tar archives as `torch.load` sees them: the legacy checkpoint format unpickles its members.

`torch.load` first tries the file as a tar archive (Python's `tarfile`, mode "r:") and, when it
opens, unpickles the members `storages`, `tensors` and `pickle` (the first two interleave pickles
with raw storage bytes, so they cannot be scanned as pickles). The same `tarfile` parser is used
here, so there is no disagreement about which members exist; it reads headers only, through a
file object that refuses reads past the end or past a budget (a header may claim a GNU long name
or a PAX record of any size, and file objects allocate the size asked for).
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
from typing import BinaryIO

from gate.errors import FormatError

MAX_MEMBERS = 100_000
MAX_HEADER_BYTES = 16 << 20  # long names and PAX records together
TORCH_MEMBERS = frozenset({"storages", "tensors", "pickle"})


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of the data
    size: int
    regular: bool


class _Guarded(io.RawIOBase):
    """Reads of a member's data are skipped by seeking; only headers are read, within a budget."""

    def __init__(self, inner: BinaryIO, size: int) -> None:
        self.inner = inner
        self.size = size
        self.budget = MAX_HEADER_BYTES

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.inner.seek(offset, whence)

    def tell(self) -> int:
        return self.inner.tell()

    def read(self, n: int | None = -1) -> bytes:
        here = self.inner.tell()
        n = self.size - here if n is None or n < 0 else min(n, max(0, self.size - here))
        if n > self.budget:
            raise FormatError(f"tar headers over {MAX_HEADER_BYTES} bytes")
        self.budget -= n
        return self.inner.read(n)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def members(stream: BinaryIO) -> tuple[Member, ...] | None:
    """The members of a tar archive, or None when `tarfile` (as torch calls it) does not open it.
    FormatError: it opens, but cannot be listed within the bounds."""
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    guarded = _Guarded(stream, size)
    try:
        tar = tarfile.open(fileobj=guarded, mode="r:")  # noqa: SIM115 (closed below)
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError):
        return None
    out: list[Member] = []
    try:
        while True:
            if len(out) >= MAX_MEMBERS:
                raise FormatError(f"a tar archive with over {MAX_MEMBERS} members")
            info = tar.next()
            if info is None:
                break
            out.append(Member(info.name, info.offset_data, info.size, info.isreg()))
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError) as e:
        raise FormatError(f"a tar archive that cannot be listed: {e}") from None
    finally:
        tar.close()
    return tuple(out)
