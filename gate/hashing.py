"""One streaming pass per file: whole-file SHA-256, format sniffing, and per-tensor digests.

Threat model: the file may be hostile or change under us. Every length is checked against the
file size and a cap before anything is allocated; memory is one chunk buffer plus the header.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable

from gate import lfs, paths
from gate.errors import FormatError
from gate.formats import safetensors, sniff

CHUNK = 8 << 20
Progress = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class TensorDigest:
    name: str
    dtype: str
    shape: tuple[int, ...]
    sha256: str  # of the tensor's raw bytes: name-independent
    constant: bool = False  # every element equal (zeros, ones): matches across unrelated models


@dataclasses.dataclass(frozen=True)
class FileScan:
    """What one read of a file established."""

    size: int
    sha256: str
    format: str
    pointer: lfs.Pointer | None = None  # set when the file is a Git LFS pointer
    pointer_error: str | None = None
    tensors: tuple[TensorDigest, ...] | None = None
    header_error: str | None = None
    changed: bool = False

    @property
    def tensors_sha256(self) -> str | None:
        return None if self.tensors is None else tensors_digest(self.tensors)


def tensors_digest(tensors: Iterable[TensorDigest]) -> str:
    """SHA-256 over canonical JSON lines [name, dtype, shape, sha256], sorted by name."""
    h = hashlib.sha256()
    for t in sorted(tensors, key=lambda t: t.name):
        line = json.dumps([t.name, t.dtype, list(t.shape), t.sha256], ensure_ascii=False)
        h.update(line.encode("utf-8") + b"\n")
    return h.hexdigest()


class _Reader:
    """Reads a file once, feeding every byte to the whole-file hash."""

    def __init__(self, f: io.FileIO, size: int, progress: Progress | None) -> None:
        self._f = f
        self._progress = progress
        self.size = size
        self.pos = 0
        self.hash = hashlib.sha256()
        self.short = False

    def read(self, n: int) -> bytes:
        data = self._f.read(n) or b""
        if len(data) < n:
            self.short = True
        self.hash.update(data)
        self.pos += len(data)
        return data

    def stream(self, buf: bytearray) -> Iterable[memoryview]:
        view = memoryview(buf)
        while self.pos < self.size:
            want = min(len(buf), self.size - self.pos)
            got = self._f.readinto(view[:want])
            if not got:
                self.short = True
                return
            chunk = view[:got]
            self.hash.update(chunk)
            self.pos += got
            if self._progress is not None:
                self._progress(got)
            yield chunk


def scan(path: str, *, chunk_size: int = CHUNK, progress: Progress | None = None) -> FileScan:
    """Hash and inspect one file in a single pass; raise OSError only for unreadable files.

    progress(n) is called after each chunk of n bytes is hashed.
    """
    with paths.open_regular(path) as f:
        before = os.fstat(f.fileno())
        size = before.st_size
        r = _Reader(f, size, progress)
        prefix = r.read(min(size, sniff.SNIFF_BYTES))
        fmt = sniff.sniff(prefix, path, size)
        pointer: lfs.Pointer | None = None
        pointer_error = header_error = None
        tensors: tuple[TensorDigest, ...] | None = None
        buf = bytearray(min(chunk_size, max(size, 1)))
        if size < lfs.MAX_POINTER_BYTES and lfs.looks_like_pointer(prefix):
            rest = r.read(size - len(prefix))
            try:
                pointer = lfs.parse(prefix + rest)
            except FormatError as e:
                pointer_error = e.message
        elif fmt == "safetensors":
            tensors, header_error = _safetensors(r, prefix, buf)
        for _ in r.stream(buf):
            pass
        extra = f.read(1) or b""
        after = os.fstat(f.fileno())
    changed = (
        r.short
        or bool(extra)
        or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
    )
    return FileScan(
        size=size,
        sha256=r.hash.hexdigest(),
        format=fmt,
        pointer=pointer,
        pointer_error=pointer_error,
        tensors=tensors,
        header_error=header_error,
        changed=changed,
    )


def _safetensors(
    r: _Reader, prefix: bytes, buf: bytearray
) -> tuple[tuple[TensorDigest, ...] | None, str | None]:
    first8 = prefix[:8] if len(prefix) >= 8 else prefix + r.read(8 - len(prefix))
    try:
        n = safetensors.header_length(first8, r.size)
        have = prefix[8:]
        raw = (have + r.read(max(0, n - len(have))))[:n]
        header = safetensors.parse_header(raw, r.size)
    except FormatError as e:
        return None, e.message
    hashers = [hashlib.sha256() for _ in header.tensors]
    constancy = [_Constancy(safetensors.DTYPE_BITS[t.dtype]) for t in header.tensors]
    i, base = 0, header.data_start
    for chunk in r.stream(buf):
        lo = r.pos - len(chunk) - base  # data-section offset of this chunk
        hi = lo + len(chunk)
        while i < len(header.tensors):
            t = header.tensors[i]
            a, b = max(t.begin, lo), min(t.end, hi)
            if a < b:
                hashers[i].update(chunk[a - lo : b - lo])
                constancy[i].feed(chunk[a - lo : b - lo])
            if t.end <= hi:
                i += 1
            else:
                break
    if r.short:
        return None, "file ended before the data section did"
    digests = tuple(
        TensorDigest(t.name, t.dtype, t.shape, h.hexdigest(), c.constant)
        for t, h, c in zip(header.tensors, hashers, constancy, strict=True)
    )
    return digests, None


class _Constancy:
    """Tracks, across chunk boundaries, whether a tensor's bytes repeat its first element."""

    __slots__ = ("constant", "pattern", "seen", "width")

    def __init__(self, bits: int) -> None:
        self.width = max(1, bits // 8)  # sub-byte dtypes: byte-level repetition
        self.pattern = b""
        self.seen = 0
        self.constant = True

    def feed(self, seg: memoryview) -> None:
        if not self.constant:
            return
        if len(self.pattern) < self.width:
            take = self.width - len(self.pattern)
            self.pattern += bytes(seg[:take])
            self.seen += min(take, len(seg))
            seg = seg[take:]
        n = len(seg)
        if not n:
            return
        phase = self.seen % self.width
        # Cheap rejection first: learned weights differ within their first few elements.
        probe = min(n, 64)
        reps = (phase + probe) // self.width + 1
        if bytes(seg[:probe]) != (self.pattern * reps)[phase : phase + probe]:
            self.constant = False
            return
        reps = (phase + n) // self.width + 1
        self.constant = bytes(seg) == (self.pattern * reps)[phase : phase + n]
        self.seen += n


def read_safetensors_header(path: str) -> safetensors.Header:
    """Read and validate only the header of a safetensors file (bounded by the cap)."""
    with paths.open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        n = safetensors.header_length(f.read(8), size)
        raw = f.read(n) or b""
        if len(raw) != n:
            raise FormatError("file ended inside the header")
        return safetensors.parse_header(raw, size)
