"""Static pickle scanning: name every global a pickle would import, never execute anything.

Threat model: a pickle runs arbitrary code when loaded. This module only disassembles opcodes
(`pickletools.genops`, which interprets nothing) and classifies imports with picklescan; it fails
closed: an unparsable stream, a read past a cap, a malformed zip or any global outside the small
allowlist below is a refusal. Only the pickle parts of a file are read (a torch zip's `*.pkl`
entries, a legacy torch file's leading pickles), never the tensor data.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import pickletools
import re
import zipfile
from typing import IO, BinaryIO, cast

from gate import paths
from gate.formats import zips

_STORAGE = re.compile(r"(^|/)data/\d+$")
MAX_PICKLE_BYTES = 256 << 20  # a state-dict pickle is small: tensor bytes live outside it
MAX_NESTING = 2  # zips inside zips
MAX_LEADING_PICKLES = 5  # legacy torch files: magic, protocol, sys info, data, storage keys

_TORCH_STORAGES = (
    "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
    "ComplexFloat", "ComplexDouble", "QUInt8", "QInt8", "QInt32", "QUInt4x2", "QUInt2x4",
)  # fmt: skip
_TORCH_DTYPES = (
    "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
    "bool", "complex64", "complex128", "float8_e4m3fn", "float8_e5m2",
)  # fmt: skip
# What ordinary torch state dicts and numpy arrays need, and nothing that can call arbitrary code.
ALLOWED: frozenset[str] = frozenset(
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch.Size",
        "torch.device",
        "torch.storage.UntypedStorage",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.ndarray",
        "numpy.dtype",
        "_codecs.encode",  # numpy's protocol-2 pickles encode raw bytes through it
    }
    | {f"torch.{s}Storage" for s in _TORCH_STORAGES}
    | {f"torch.{d}" for d in _TORCH_DTYPES}
)


@dataclasses.dataclass(frozen=True)
class PickleScan:
    """The globals a pickle-family file imports, which of them are refused, and scan errors."""

    globals: tuple[str, ...]
    refused: tuple[str, ...]  # not in ALLOWED; dangerous ones (per picklescan) first
    dangerous: tuple[str, ...]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.refused


class _TooLarge(Exception):
    pass


class _Capped(io.RawIOBase):
    """A read-only view of a stream that refuses to deliver more than `cap` bytes."""

    def __init__(self, inner: BinaryIO, cap: int, available: int) -> None:
        self.inner = inner
        self.cap = cap
        self.available = available  # bytes left in the stream: a length field may lie
        self.used = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.used

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or self.used + n > self.cap:
            raise _TooLarge(f"pickle data exceeds the {self.cap}-byte limit")
        if self.used + n > self.available:
            # Checked before reading: file objects allocate the requested size up front, so a
            # 200-byte pickle claiming an 80 MB string would otherwise cost 80 MB (fuzz finding).
            left = self.available - self.used
            raise EOFError(f"{n} bytes needed at byte {self.used}, {left} left")
        data = self.inner.read(n)
        self.used += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        line = self.inner.readline(self.cap - self.used + 1)
        self.used += len(line)
        if self.used > self.cap:
            raise _TooLarge(f"pickle data exceeds the {self.cap}-byte limit")
        return line


def _one_pickle(stream: BinaryIO, start: int, where: str) -> tuple[bytes, str | None]:
    """The bytes of the pickle at `start` (validated by a full opcode walk), or an error."""
    available = stream.seek(0, io.SEEK_END) - start
    stream.seek(start)
    capped = _Capped(stream, MAX_PICKLE_BYTES, available)
    try:
        # genops disassembles; it constructs and runs nothing.
        for opcode, _arg, _pos in pickletools.genops(cast("IO[bytes]", capped)):
            if opcode.name == "STOP":
                break
        else:
            return b"", f"{where}: pickle stream ends without STOP"
    except _TooLarge as e:
        return b"", f"{where}: {e}"
    except Exception as e:  # genops raises ValueError, EOFError, UnicodeDecodeError, ...
        return b"", f"{where}: not a valid pickle ({type(e).__name__}: {e})"
    stream.seek(start)
    return stream.read(capped.used), None


def _classify(data: bytes, where: str) -> tuple[set[str], set[str], str | None]:
    from picklescan import scanner  # imported only when a pickle-family file is present

    try:
        result = scanner.scan_pickle_bytes(
            io.BytesIO(data), where, multiple_pickles=False, strict=True
        )
    except Exception as e:  # found by fuzz/fuzz.py: malformed STACK_GLOBAL raises ValueError
        return set(), set(), f"{where}: the scanner rejected it ({type(e).__name__}: {e})"
    names = {f"{g.module}.{g.name}" for g in result.globals}
    dangerous = {
        f"{g.module}.{g.name}" for g in result.globals if g.safety == scanner.SafetyLevel.Dangerous
    }
    error = f"{where}: picklescan could not parse it" if result.scan_err else None
    return names, dangerous, error


def _scan_stream(stream: BinaryIO, where: str, depth: int) -> tuple[set[str], set[str], list[str]]:
    stream.seek(0)
    head = stream.read(8)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _scan_zip(stream, where, depth)
    if head.startswith(b"\x93NUMPY"):
        return _scan_npy(stream, where)
    names: set[str] = set()
    dangerous: set[str] = set()
    errors: list[str] = []
    start = 0
    # Every pickle a loader could read must parse: a plain pickle is one pickle then EOF; a
    # legacy torch file is five (magic, protocol, sys info, object, storage keys) then raw bytes.
    for _ in range(MAX_LEADING_PICKLES):
        stream.seek(start)
        if not stream.read(1):
            break
        data, error = _one_pickle(stream, start, where)
        if error is not None:
            errors.append(error)
            break
        more_names, more_dangerous, scan_error = _classify(data, where)
        names |= more_names
        dangerous |= more_dangerous
        errors += [scan_error] if scan_error else []
        start += len(data)
    return names, dangerous, errors


def _scan_zip(stream: BinaryIO, where: str, depth: int) -> tuple[set[str], set[str], list[str]]:
    names: set[str] = set()
    dangerous: set[str] = set()
    errors: list[str] = []
    if depth > MAX_NESTING:
        return names, dangerous, [f"{where}: zip archives nested deeper than {MAX_NESTING}"]
    refusal = zips.too_many_entries(stream)  # before zipfile parses the central directory
    if refusal is not None:
        return names, dangerous, [f"{where}: unreadable zip archive ({refusal})"]
    try:
        with zipfile.ZipFile(stream) as archive:
            entries = archive.infolist()
            for entry in entries:
                inner = f"{where}:{entry.filename}"
                if entry.is_dir():
                    continue
                with archive.open(entry) as f:
                    head = f.read(8)
                # torch reads `<archive>/data/<n>` entries as raw storage, never unpickles them.
                storage = _STORAGE.search(entry.filename) is not None
                is_pickle = entry.filename.endswith((".pkl", ".pickle")) or (
                    head[:1] == b"\x80" and not storage
                )
                nested = not storage and head.startswith((b"PK\x03\x04", b"\x93NUMPY"))
                if not (is_pickle or nested):
                    continue  # tensor storage bytes: data, never interpreted
                if entry.file_size > MAX_PICKLE_BYTES:
                    errors.append(f"{inner}: {entry.file_size} bytes, over the pickle limit")
                    continue
                with archive.open(entry) as f:
                    data = f.read(min(entry.file_size, MAX_PICKLE_BYTES) + 1)
                if len(data) > MAX_PICKLE_BYTES:  # the declared size lied
                    errors.append(f"{inner}: expands past the pickle limit")
                    continue
                n, d, e = _scan_stream(io.BytesIO(data), inner, depth + 1)
                names |= n
                dangerous |= d
                errors += e
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError) as e:
        errors.append(f"{where}: unreadable zip archive ({e})")
    except (OSError, EOFError, ValueError) as e:
        errors.append(f"{where}: unreadable zip archive ({type(e).__name__}: {e})")
    return names, dangerous, errors


def _scan_npy(stream: BinaryIO, where: str) -> tuple[set[str], set[str], list[str]]:
    """A .npy holds raw data unless its dtype is `object`, which is stored as a pickle."""
    stream.seek(6)
    version = stream.read(2)
    width = 2 if version[:1] == b"\x01" else 4
    size = int.from_bytes(stream.read(width), "little")
    if size > 1 << 16:
        return set(), set(), [f"{where}: numpy header of {size} bytes"]
    try:
        header = ast.literal_eval(stream.read(size).decode("latin1"))  # literals only: safe
        descr = str(header["descr"])
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
        return set(), set(), [f"{where}: malformed numpy header"]
    if "O" not in descr:
        return set(), set(), []
    start = stream.tell()
    data, error = _one_pickle(stream, start, where)
    if error is not None:
        return set(), set(), [error]
    names, dangerous, scan_error = _classify(data, where)
    return names, dangerous, [scan_error] if scan_error else []


def scan(path: str, display: str) -> PickleScan:
    """Scan a pickle-family file (raw pickle, torch zip or legacy, .npy/.npz) without loading it."""
    try:
        with paths.open_regular(path) as raw, io.BufferedReader(raw) as f:
            names, dangerous, errors = _scan_stream(f, display, 0)
    except OSError as e:
        return PickleScan((), (), (), f"{display}: cannot be read: {e.strerror}")
    refused = sorted(names - ALLOWED, key=lambda g: (g not in dangerous, g))
    return PickleScan(
        globals=tuple(sorted(names)),
        refused=tuple(refused),
        dangerous=tuple(sorted(dangerous)),
        error="; ".join(errors) if errors else None,
    )
