"""One read per byte: whole-file SHA-256, format sniffing, header checks and per-tensor digests.

Threat model: the file may be hostile or change under us. Every length is checked against the
file size and a cap before anything is allocated; memory is a few chunk buffers per file plus the
header, whatever the file size.

Per-tensor digests are BLAKE3 (cryptographic, about 3x SHA-256's speed with SHA-NI here), so the
second digest costs a fraction of the first; the file's SHA-256 is kept because it equals the Git
LFS oid and the Hub's LFS sha256. The SHA-256 stream runs in the reading thread; the tensor stream
runs on the same buffers, in that thread or (when a core would otherwise idle) in a helper thread,
so one file can keep two cores busy (both hash libraries release the GIL). The tensor stream runs
only when asked for (`tensors=True`): a check needs the SHA-256 alone, unless a lineage claim
needs the tensors (asked for in the same read) or a changed file's tensors are to be named (a
second read of that file); docs/decisions.md, issue 17.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import queue
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any

import blake3

from gate import lfs, paths
from gate.errors import FormatError
from gate.formats import HeaderReader, Plan, Region, registry, safetensors, sniff

# 1 MiB reads: syscall overhead is negligible and a chunk stays in L2 while both digests read
# it (8 MiB chunks measured about 15% slower here).
CHUNK = 1 << 20
BUFFERS_PER_FILE = 3  # one being read, one being digested, one spare
Progress = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class TensorDigest:
    name: str
    dtype: str
    shape: tuple[int, ...]
    digest: str  # BLAKE3 of the tensor's raw bytes, hex: name-independent
    constant: bool = False  # every element equal (zeros, ones): matches across unrelated models
    # a position table computed by a formula (sinusoids: Whisper's encoder positions), equal in
    # every model of its architecture: no evidence of shared weights either
    formula: bool = False


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
    # The tensor table was read and is valid, but the per-tensor digests were not asked for
    # (tensors is None): Scanner.scan_many(..., tensors=...) computes them when a consumer
    # needs them (a changed file's tensor diff, the exact lineage tier, `lock`).
    lazy: bool = False
    # Other files the per-tensor digests also cover (ONNX external data, as the model names
    # them, relative to its folder): the stat cache keys on this file alone, so it keeps such
    # a scan without its digests, and the check reads them again when one of those changed.
    depends: tuple[str, ...] = ()

    @property
    def tensors_digest(self) -> str | None:
        return None if self.tensors is None else tensors_digest(self.tensors)


def tensors_digest(tensors: Iterable[TensorDigest]) -> str:
    """`blake3:` + BLAKE3 over canonical JSON lines [name, dtype, shape, digest], sorted by name."""
    h = blake3.blake3()
    for t in sorted(tensors, key=lambda t: t.name):
        line = json.dumps([t.name, t.dtype, list(t.shape), t.digest], ensure_ascii=False)
        h.update(line.encode("utf-8") + b"\n")
    return "blake3:" + h.hexdigest()


class _TensorStream:
    """Per-tensor BLAKE3 digests and constancy over the data section, fed chunk by chunk.

    Tensors are laid out in order, so one hasher is alive at a time: a header of hundreds of
    thousands of (empty) tensors costs a small record each, not a hasher each.
    """

    def __init__(self, plan: Plan) -> None:
        self.tensors = plan.regions
        self.base = plan.base
        self.i = 0
        self.hasher: Any = None
        self.constancy: _Constancy | None = None
        self.columns: Columns | Rows | None = None
        self.done: list[TensorDigest] = []

    def feed(self, chunk: memoryview, offset: int) -> None:
        lo = offset - self.base  # data-section offset of this chunk (may be negative)
        hi = lo + len(chunk)
        while self.i < len(self.tensors):
            t = self.tensors[self.i]
            a, b = max(t.begin, lo), min(t.end, hi)
            if a < b:
                if self.hasher is None:
                    self.hasher, self.constancy = blake3.blake3(), _Constancy(8 * t.width)
                    self.columns = formula_probe(t.name, t.dtype, t.shape)
                seg = chunk[a - lo : b - lo]
                self.hasher.update(seg)
                assert self.constancy is not None
                self.constancy.feed(seg)
                if self.columns is not None:
                    self.columns.feed(seg, a - t.begin)
            if t.end > hi:
                return
            self._finish(t)

    def _finish(self, t: Region) -> None:
        formula = False
        if self.hasher is None:  # no bytes: an empty tensor
            digest, constant = _EMPTY_DIGEST, True
        else:
            assert self.constancy is not None
            digest, constant = self.hasher.hexdigest(), self.constancy.constant
            formula = self.columns is not None and not constant and self.columns.formula()
        self.done.append(TensorDigest(t.name, t.dtype, t.shape, digest, constant, formula))
        self.hasher = self.constancy = self.columns = None
        self.i += 1

    def result(self) -> tuple[TensorDigest, ...]:
        while self.i < len(self.tensors):
            self._finish(self.tensors[self.i])
        return tuple(self.done)


_EMPTY_DIGEST = blake3.blake3().hexdigest()


class _Helper(threading.Thread):
    """Runs the tensor stream beside the reader (threaded) or in the reader's thread (inline).

    Threaded, buffers travel through two bounded queues; worth it only when a core would
    otherwise idle (fewer files than cores), since the hand-off costs context switches.
    """

    def __init__(self, stream: _TensorStream, free: queue.Queue[bytearray], threaded: bool) -> None:
        super().__init__(daemon=True, name="provenance-gate-tensors")
        self.stream = stream
        self.free = free
        self.threaded = threaded
        self.work: queue.Queue[tuple[bytearray, int, int] | None] = queue.Queue(BUFFERS_PER_FILE)
        self.error: BaseException | None = None
        if threaded:
            self.start()

    def submit(self, buf: bytearray, offset: int, n: int) -> None:
        """Digest buf[:n] (at file offset); buf goes back to the free list when done."""
        if self.threaded:
            self.work.put((buf, offset, n))
            return
        try:
            self.stream.feed(memoryview(buf)[:n], offset)
        finally:
            self.free.put(buf)

    def close(self) -> None:
        if self.threaded:
            self.work.put(None)
            self.join()

    def run(self) -> None:
        while (item := self.work.get()) is not None:
            buf, offset, n = item
            try:
                if self.error is None:
                    self.stream.feed(memoryview(buf)[:n], offset)
            except BaseException as e:  # re-raised in the reader thread
                self.error = e
            finally:
                self.free.put(buf)


def scan(
    path: str,
    *,
    chunk_size: int = CHUNK,
    progress: Progress | None = None,
    threaded: bool = True,
    tensors: bool = True,
) -> FileScan:
    """Hash and inspect one file in a single pass; raise OSError only for unreadable files.

    progress(n) is called after each chunk of n bytes is read. threaded: digest tensors in a
    helper thread, overlapping the sequential SHA-256 (use it when cores would otherwise idle).
    tensors: also compute the per-tensor BLAKE3 digests (else only the file's SHA-256 is
    computed and the header validated; the scan is `lazy`).
    """
    with paths.open_regular(path) as f:
        before = os.fstat(f.fileno())
        size = before.st_size
        free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(BUFFERS_PER_FILE):
            free.put(bytearray(max(1, min(chunk_size, size))))
        sha = hashlib.sha256()
        offset, short, fmt = 0, False, ""
        pointer: lfs.Pointer | None = None
        pointer_error: str | None = None
        header: HeaderReader | None = None
        header_done = False
        planned: Plan | None = None
        helper: _Helper | None = None
        try:
            while offset < size:
                buf = free.get()
                n = f.readinto(memoryview(buf)[: min(len(buf), size - offset)]) or 0
                if not n:
                    short = True
                    free.put(buf)
                    break
                chunk = memoryview(buf)[:n]
                if offset == 0:
                    fmt = sniff.sniff(bytes(chunk[: sniff.SNIFF_BYTES]), path, size)
                    if size < lfs.MAX_POINTER_BYTES and lfs.looks_like_pointer(bytes(chunk[:16])):
                        pointer, pointer_error = _pointer(chunk, size)
                    elif (spec := registry.BY_NAME[fmt]).header is not None:
                        header = spec.header(size, f.fileno())
                if header is not None and not header_done and header.feed(chunk, offset):
                    header_done, planned = True, header.plan
                    if planned is not None and tensors:
                        # Both headers are complete within the chunk that completes them
                        # (GGUF's is parsed whole at the first chunk), so no data was read
                        # before the plan.
                        helper = _Helper(_TensorStream(planned), free, threaded)
                sha.update(chunk)
                if helper is not None and helper.error is None:
                    helper.submit(buf, offset, n)  # the helper returns buf to `free`
                else:
                    free.put(buf)
                offset += n
                if progress is not None:
                    progress(n)
            extra = f.read(1) or b""
        finally:
            if helper is not None:
                helper.close()
        after = os.fstat(f.fileno())
    if helper is not None and helper.error is not None:
        raise helper.error
    changed = (
        short
        or bool(extra)
        or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
    )
    digests: tuple[TensorDigest, ...] | None = None
    header_error = None
    lazy = False
    if not fmt:  # empty file: nothing was sniffed
        fmt = sniff.sniff(b"", path, size)
        header_error = "empty file" if registry.BY_NAME[fmt].tensors else None
    if header is not None:
        header_error = header.error
        if header.header is None and header_error is None:
            header_error = "file ended inside the header"
        if planned is not None and short:
            header_error = "file ended before the data section did"
        elif helper is not None:
            digests = helper.stream.result()
        elif planned is not None:
            lazy = True
    depends: tuple[str, ...] = ()
    if planned is not None and planned.external:
        depends = tuple(sorted({location for location, _ in planned.external}))
        if digests is not None:
            external = _external_digests(os.path.dirname(path), planned.external)
            digests = None if external is None else digests + external
    return FileScan(
        size=size,
        sha256=sha.hexdigest(),
        format=fmt,
        pointer=pointer,
        pointer_error=pointer_error,
        tensors=digests,
        header_error=header_error,
        changed=changed,
        lazy=lazy,
        depends=depends,
    )


def _external_digests(
    folder: str, external: tuple[tuple[str, Region], ...]
) -> tuple[TensorDigest, ...] | None:
    """Digests of tensors kept in other files of the model's folder (ONNX external data), read
    range by range: the same digests as the tensors would have inline. None when a file is
    outside the folder, missing or too short (the ONNX check says which, PG314): a partial
    table would read as a model without those tensors."""
    out: list[TensorDigest] = []
    try:
        # sorted by file: one file open at a time (an export may write one file per tensor)
        for location, group in itertools.groupby(external, key=lambda e: e[0]):
            real, problem = paths.resolve_inside(folder, location)
            if problem is not None:
                return None
            with paths.open_regular(real) as f:
                fd, size = f.fileno(), os.fstat(f.fileno()).st_size
                for _, region in group:
                    if region.end > size:
                        return None
                    stream = _TensorStream(Plan((region,), 0))
                    at = region.begin
                    while at < region.end:
                        chunk = os.pread(fd, min(CHUNK, region.end - at), at)
                        if not chunk:
                            return None
                        stream.feed(memoryview(chunk), at)
                        at += len(chunk)
                    out += stream.result()
    except OSError:
        return None
    return tuple(out)


def _pointer(chunk: memoryview, size: int) -> tuple[lfs.Pointer | None, str | None]:
    if len(chunk) < size:  # a pointer is < 1 KiB: it always fits in the first chunk
        return None, "pointer file could not be read whole"
    try:
        return lfs.parse(bytes(chunk)), None
    except FormatError as e:
        return None, e.message


SINUSOID_TOL = 2e-2  # of the table's largest value: fp16 and bf16 storage stay far below
_COLUMN_FORMATS = {"F32": "<f", "F16": "<e", "BF16": ""}  # struct codes (bf16: widened by hand)


def positional(name: str) -> bool:
    """Whether a tensor's name (or role) says it is indexed by position."""
    return "pos" in name.lower()


_SIGNAL_WORDS = ("stft", "basis", "dft", "fourier", "window", "mel", "fbank", "filterbank")


def signal_table(name: str) -> bool:
    """Whether a tensor's name says it is a signal-processing table (a Fourier basis, a mel
    filter bank): computed by a formula in every model that has one."""
    low = name.lower()
    return any(w in low for w in _SIGNAL_WORDS)


def formula_probe(name: str, dtype: str, shape: tuple[int, ...]) -> Columns | Rows | None:
    """What gathers the values the formula test needs while a tensor's bytes stream past:
    columns of a position table, rows of a signal-processing table; None: neither."""
    if positional(name):
        return Columns.of(dtype, shape)
    if signal_table(name):
        return Rows.of(dtype, shape)
    return None


def formula_table(
    dtype: str, shape: tuple[int, ...], data: bytes | memoryview, name: str = "pos"
) -> bool:
    """Whether a table's values (its bytes, as stored) are computed by a formula: sinusoids of
    the row index (a position table), or rows that are each a windowed sinusoid (a Fourier
    basis); the one test for the digests here, torch checkpoints' digests and the weight tiers
    (gate/lineage/relation.py)."""
    probe = formula_probe(name, dtype, shape)
    if probe is None:
        return False
    probe.feed(memoryview(data).cast("B"), 0)
    return probe.formula()


def _unpack(code: str, buf: bytes | bytearray) -> list[float]:
    if code:
        return [v for (v,) in struct.iter_unpack(code, buf)]
    return [  # bf16: the upper half of a float32
        struct.unpack("<f", b"\0\0" + bytes(buf[i : i + 2]))[0] for i in range(0, len(buf), 2)
    ]


class Rows:
    """A few rows (up to SAMPLE, spread over the table) of a table whose rows are signals, kept
    as its bytes stream past. A Fourier basis (STFT kernels, windowed or not) has every row a
    windowed sinusoid: nearly all its energy falls in three adjacent DFT bins, where a learned
    filter's spreads (measured on Silero VAD's kernels: basis rows 1.0000, learned rows 0.04-0.88).
    The DFT of a few rows is computed in pure Python (the core never imports numpy)."""

    SAMPLE = 8
    MAX_BYTES = 16 << 20
    MIN_ROWS, MIN_COLS = 8, 16
    CONCENTRATION = 0.99

    __slots__ = ("buf", "code", "keep", "row_bytes", "width")

    def __init__(self, rows: int, cols: int, code: str, width: int) -> None:
        self.code, self.width, self.row_bytes = code, width, cols * width
        step = max(1, rows // self.SAMPLE)
        self.keep = {r: k for k, r in enumerate(range(0, rows, step)[: self.SAMPLE])}
        self.buf = bytearray(len(self.keep) * self.row_bytes)

    @classmethod
    def of(cls, dtype: str, shape: tuple[int, ...]) -> Rows | None:
        code = _COLUMN_FORMATS.get(dtype)
        if code is None or len(shape) < 2:
            return None
        cols = math.prod(shape[1:])
        width = 2 if dtype in ("F16", "BF16") else 4
        if (
            shape[0] < cls.MIN_ROWS
            or cols < cls.MIN_COLS
            or shape[0] * cols * width > cls.MAX_BYTES
        ):
            return None
        return cls(shape[0], cols, code, width)

    def feed(self, seg: memoryview, start: int) -> None:
        end = start + len(seg)
        for r in range(start // self.row_bytes, (end - 1) // self.row_bytes + 1):
            k = self.keep.get(r)
            if k is None:
                continue
            a = r * self.row_bytes
            lo, hi = max(a, start), min(a + self.row_bytes, end)
            at = k * self.row_bytes + lo - a
            self.buf[at : at + hi - lo] = seg[lo - start : hi - start]

    def formula(self) -> bool:
        values = _unpack(self.code, self.buf)
        if not all(math.isfinite(v) for v in values):
            return False
        n = self.row_bytes // self.width
        rows = [values[i : i + n] for i in range(0, len(values), n)]
        energy = [sum(x * x for x in row) for row in rows]
        top = max(energy, default=0.0)
        live = [row for row, e in zip(rows, energy, strict=True) if e > 1e-8 * top]
        return bool(live) and all(concentrated(row, self.CONCENTRATION) for row in live)


def concentrated(row: list[float], share: float) -> bool:
    """Whether share of a signal's energy lies in three adjacent bins of its real DFT."""
    n = len(row)
    power = []
    for k in range(n // 2 + 1):
        w = -2.0 * math.pi * k / n
        re = sum(x * math.cos(w * i) for i, x in enumerate(row))
        im = sum(x * math.sin(w * i) for i, x in enumerate(row))
        power.append(re * re + im * im)
    total = sum(power)
    if total == 0.0:
        return True
    best = max(sum(power[k : k + 3]) for k in range(max(1, len(power) - 2)))
    return best >= share * total


class Columns:
    """A few columns (the first and last four) of a 2-D table indexed by position, gathered as
    its bytes stream past, to tell a table computed by a formula from a learned one without
    numpy (the core never imports it): every column of a sinusoidal table obeys
    a[p+1] + a[p-1] = 2 cos(w) a[p], which a learned column misses by its own size."""

    EDGE = 4  # columns kept at each end
    MAX_BYTES = 64 << 20  # larger tables are not position tables

    __slots__ = ("buf", "code", "ranges", "rows", "stride", "width")

    def __init__(self, rows: int, cols: int, code: str, width: int) -> None:
        self.rows, self.code, self.width = rows, code, width
        self.stride = cols * width
        keep = sorted({*range(min(self.EDGE, cols)), *range(max(0, cols - self.EDGE), cols)})
        # contiguous byte ranges of one row that are kept: (start in the row, start in buf row)
        self.ranges = [(j * width, k * width) for k, j in enumerate(keep)]
        self.buf = bytearray(rows * len(keep) * width)

    @classmethod
    def of(cls, dtype: str, shape: tuple[int, ...]) -> Columns | None:
        code = _COLUMN_FORMATS.get(dtype)
        if code is None or len(shape) != 2:
            return None
        if shape[0] < 8 or shape[1] < 1:
            return None
        width = 2 if dtype in ("F16", "BF16") else 4
        if shape[0] * shape[1] * width > cls.MAX_BYTES:
            return None
        return cls(shape[0], shape[1], code, width)

    def feed(self, seg: memoryview, start: int) -> None:
        """seg: bytes of the table from byte `start` on."""
        end = start + len(seg)
        kept = len(self.ranges) * self.width
        for r in range(start // self.stride, min(self.rows, (end - 1) // self.stride + 1)):
            for col, to in self.ranges:
                a = r * self.stride + col
                lo, hi = max(a, start), min(a + self.width, end)
                if lo < hi:
                    at = r * kept + to + (lo - a)
                    self.buf[at : at + hi - lo] = seg[lo - start : hi - start]

    def formula(self) -> bool:
        n = len(self.ranges)
        values = _unpack(self.code, self.buf)
        if not all(math.isfinite(v) for v in values):
            return False
        scale = max(abs(v) for v in values)
        if scale == 0.0:
            return False
        for j in range(n):
            col = values[j::n]
            a = col[1:-1]
            b = [col[i + 2] + col[i] for i in range(len(col) - 2)]
            aa = sum(x * x for x in a)
            k = sum(x * y for x, y in zip(a, b, strict=True)) / aa if aa else 0.0
            if max(abs(y - k * x) for x, y in zip(a, b, strict=True)) > SINUSOID_TOL * scale:
                return False
        return True


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


def header_shapes(path: str, max_bytes: int = 64 << 20) -> list[tuple[int, ...]] | None:
    """The tensor shapes a weight file's header declares, read as the digest pass reads it
    (the format's own bounded header parser, at most max_bytes; None: no tensor table, or a
    malformed or larger header). Cheap: no weight library, no tensor data."""
    with paths.open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        chunk = f.read(CHUNK) or b""
        spec = registry.BY_NAME[sniff.sniff(chunk[: sniff.SNIFF_BYTES], path, size)]
        if spec.header is None:
            return None
        header = spec.header(size, f.fileno())
        offset = 0
        while chunk and offset < max_bytes:
            if header.feed(memoryview(chunk), offset):
                plan = header.plan
                return None if plan is None else [r.shape for r in plan.regions]
            offset += len(chunk)
            chunk = f.read(CHUNK) or b""
    return None


def read_safetensors_header(path: str) -> safetensors.Header:
    """Read and validate only the header of a safetensors file (bounded by the cap)."""
    with paths.open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        n = safetensors.header_length(f.read(8) or b"", size)
        raw = f.read(n) or b""
        if len(raw) != n:
            raise FormatError("file ended inside the header")
        return safetensors.parse_header(raw, size)
