"""Static pickle analysis: name every global that loading a stream would import, never run it.

Threat model: unpickling runs code. A stream is walked opcode by opcode with a symbolic stack and
memo that follow the unpickler's own rules, so the globals named are exactly those a loader would
import (a `STACK_GLOBAL` whose operands are not known strings is an unknown import), and the walk
stops only where the unpickler itself would fail, so a stream that imports something and then
breaks is still caught. Hand-written rather than built on `pickletools.genops` (which picklescan
uses): genops parses some arguments more strictly than the C unpickler (`I0x10` is a valid INT to
`pickle.load`, an error to genops), and a walk that stops early would miss what follows. Argument
readers here accept a superset of what the C and pure-Python unpicklers accept (joblib uses the
latter); whenever the symbolic stack could diverge from the real one, later `STACK_GLOBAL`s are
treated as unknown imports. Extension-registry opcodes (EXT1/2/4) are refused: no allowlist can
vouch for a code the loading process registers. picklescan classifies what is found ("dangerous").
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import logging
import pickletools
import struct
from typing import BinaryIO

from gate.formats.exposure import Kind

# picklescan logs attacker-named globals at WARNING; Python's last-resort handler would print
# them to stderr, where a CI runner reads workflow commands. They are reported as findings instead.
_LOG = logging.getLogger("picklescan")
_LOG.addHandler(logging.NullHandler())
_LOG.propagate = False

MAX_PICKLE_BYTES = 256 << 20  # a state-dict pickle is small: tensor bytes live outside it
MAX_OPCODES = 4_000_000  # a few seconds of walking; a state dict needs ~30 per tensor
MAX_VALUE_CHARS = 4096  # longer strings cannot be module or attribute names worth resolving
MAX_MARKS = 100_000  # open MARKs: a state dict nests a few; millions would cost gigabytes
MAX_MEMO = 1_000_000  # memo entries tracked; past that, STACK_GLOBALs count as unknown
_BUFFER = 1 << 16

_TORCH_STORAGES = (
    "Float",
    "Double",
    "Half",
    "BFloat16",
    "Long",
    "Int",
    "Short",
    "Char",
    "Byte",
    "Bool",
    "ComplexFloat",
    "ComplexDouble",
    "QUInt8",
    "QInt8",
    "QInt32",
    "QUInt4x2",
    "QUInt2x4",
)
_TORCH_DTYPES = (
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
    "complex64",
    "complex128",
    "float8_e4m3fn",
    "float8_e5m2",
)
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
UNKNOWN = "<unknown: STACK_GLOBAL operands not known strings>"
LONG_NAME = "<a module name over 16 KB>"


@dataclasses.dataclass(frozen=True)
class Walk:
    """What an unpickler would do with a stream: its imports, and whether it reaches STOP."""

    start: int
    end: int  # offset after the last byte the walk consumed
    complete: bool  # reached STOP with a value: a loader returns an object
    imports: tuple[str, ...]  # module.name, UNKNOWN, or "extension code N", in order
    error: str | None = None  # why a loader would fail (or why the walk could not go on)
    capped: bool = False  # a cap was hit: what follows is unknown

    @property
    def kind(self) -> Kind:
        """code: loading imports something; data: a pickle of plain values; none: not a pickle."""
        if self.imports or self.capped:
            return "code"
        return "data" if self.complete else "none"


class _Capped(Exception):
    pass


class _Fail(Exception):
    """The unpickler stops here (it would raise)."""


_ANY = object()  # a stack value whose content is not tracked
_OPS = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
_MARKED = {op.name for op in pickletools.opcodes if pickletools.markobject in op.stack_before}
_STRINGS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
}


class _Reader:
    """Bounded reads from a stream (never past the data's end nor the cap), served from a
    buffer: a walk costs one stream call per 64 KiB, not one per opcode."""

    def __init__(self, stream: BinaryIO, start: int, available: int, cap: int, exact: bool) -> None:
        self.stream = stream
        self.exact = exact
        self.pos = start  # offset in the stream of the next unread byte
        self.end = start + available
        self.cap_end = start + cap
        self.buf = b""
        self.at = 0  # position of `pos` in buf
        try:
            if stream.tell() != start:
                stream.seek(start)
        except Exception as e:  # any decoder's error (zlib, lzma, a zip CRC): see _fill
            raise _Fail(f"the data cannot be read ({type(e).__name__})") from None

    def _fill(self, want: int) -> bool:
        """Make at least `want` bytes available in buf (fewer only at the end of the data)."""
        have = len(self.buf) - self.at
        while have < want:
            room = min(self.end, self.cap_end) - (self.pos + have)
            if room <= 0:
                return False
            step = want - have if self.exact else max(want - have, _BUFFER)
            try:
                more = self.stream.read(min(room, step))
            except Exception as e:
                # The stream decodes untrusted bytes (zlib, lzma, bz2, a zip entry whose CRC is
                # checked at its end): whatever it raises, a loader reading it fails there too.
                raise _Fail(f"the data cannot be read further ({type(e).__name__})") from None
            if not more:
                self.end = self.pos + have  # the stream ended before its stated size
                return False
            self.buf = self.buf[self.at :] + more
            self.at = 0
            have = len(self.buf)
        return True

    def _room(self, n: int) -> None:
        if self.pos + n > self.end:
            raise _Fail(f"{n} bytes needed at byte {self.pos}: the data ends first")
        if self.pos + n > self.cap_end:
            raise _Capped(f"pickle data exceeds the {self.cap_end - self.pos}-byte limit")

    def read(self, n: int) -> bytes:
        if len(self.buf) - self.at < n:
            self._room(n)
            if not self._fill(n):
                self._room(n)  # the data ended first
                raise _Fail(f"the data ends at byte {self.pos + len(self.buf) - self.at}")
        data = self.buf[self.at : self.at + n]
        self.at += n
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        """Consume n bytes without holding them (large BINBYTES, strings we need not know)."""
        self._room(n)
        while n:
            if self.at >= len(self.buf) and not self._fill(min(n, _BUFFER)):
                raise _Fail(f"the data ends at byte {self.pos}")
            step = min(n, len(self.buf) - self.at)
            self.at += step
            self.pos += step
            n -= step

    def line(self) -> bytes | None:
        """One line without its newline; None when it is longer than MAX_VALUE_CHARS * 4 bytes
        (consumed, not kept). At the end of the data the pure-Python unpickler takes the last
        byte for the newline; that reading is the permissive one, so it is the one taken."""
        kept = b""
        long = False
        while True:
            if self.at >= len(self.buf) and not self._fill(1):
                if self.pos >= min(self.end, self.cap_end) and self.pos < self.end:
                    raise _Capped("pickle data exceeds the limit")
                if kept and not long:
                    return kept[:-1]  # the data ended without a newline
                raise _Fail(f"the data ends at byte {self.pos}")
            nl = self.buf.find(b"\n", self.at)
            stop = len(self.buf) if nl < 0 else nl + 1
            piece = self.buf[self.at : stop]
            self.pos += stop - self.at
            self.at = stop
            if not long:
                kept += piece
                long = len(kept) > MAX_VALUE_CHARS * 4 + 1
                if long:
                    kept = b""
            if nl >= 0:
                return None if long else kept[:-1]


def walk(
    stream: BinaryIO,
    start: int = 0,
    size: int | None = None,
    cap: int = MAX_PICKLE_BYTES,
    exact: bool = False,
) -> Walk:
    """Walk one pickle from `start` to STOP, or to where an unpickler would fail. size: the
    stream's length when known (seeking to the end of a compressed stream costs a full read).
    exact: read only the bytes an unpickler asks for, never ahead; for a decompressing stream,
    whose corrupt tail raises only when it is read (joblib's unpickler runs what precedes it)."""
    if size is None:
        size = stream.seek(0, io.SEEK_END)
    imports: list[str] = []
    extensions: list[str] = []
    frames: list[list[object]] = [[]]
    memo: dict[int, object] = {}
    exact = True  # False once the symbolic stack may differ from the real one

    def pop(n: int) -> list[object]:
        frame = frames[-1]
        if len(frame) < n:
            raise _Fail("stack underflow")
        taken = frame[len(frame) - n :]
        del frame[len(frame) - n :]
        return taken

    def total() -> int:
        return sum(len(f) for f in frames)

    r: _Reader | None = None
    try:
        r = _Reader(stream, start, max(0, size - start), cap, exact)
        for _ in range(MAX_OPCODES):
            code = r.read(1)
            op = _OPS.get(code)
            if op is None:
                raise _Fail(f"byte {r.pos - 1} is not an opcode ({code!r})")
            name = op.name
            value = _arg(r, op)
            if name == "STOP":
                pop(1)
                return Walk(start, r.pos, True, tuple(imports + extensions))
            if name in ("GLOBAL", "INST"):
                assert isinstance(value, tuple)
                module, attr = value
                if "\0" in module.split(".", 1)[0]:
                    raise _Fail("a module name with a NUL byte cannot be imported")
                imports.append(f"{module}.{attr}" if module != LONG_NAME else LONG_NAME)
                if name == "GLOBAL":
                    frames[-1].append(_ANY)
                    continue
            if name == "STACK_GLOBAL":
                module, attr = pop(2)
                known = exact and isinstance(module, str) and isinstance(attr, str)
                imports.append(f"{module}.{attr}" if known else UNKNOWN)
                frames[-1].append(_ANY)
            elif name in ("EXT1", "EXT2", "EXT4"):
                # An unregistered code stops every unpickler here, and ML loaders register none:
                # only a pickle that goes on to STOP relies on one. That pickle is refused.
                extensions.append(f"extension code {value}")
                frames[-1].append(_ANY)
            elif name == "MARK":
                if len(frames) > MAX_MARKS:
                    raise _Capped(f"more than {MAX_MARKS} open MARKs")
                frames.append([])
            elif name in _MARKED:
                if len(frames) == 1:
                    raise _Fail(f"{name} without a MARK")
                popped = frames.pop()
                if name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                    if not total():
                        raise _Fail(f"{name} without a target")
                elif name == "OBJ" and not popped:
                    raise _Fail("OBJ without a class")
                elif name != "POP_MARK":
                    frames[-1].append(_ANY)
            elif name == "POP":
                if frames[-1]:
                    frames[-1].pop()
                elif len(frames) > 1:
                    frames.pop()  # both unpicklers pop the mark when nothing is above it
                else:
                    raise _Fail("stack underflow")
            elif name == "DUP":
                if not frames[-1]:
                    raise _Fail("DUP on an empty stack")
                frames[-1].append(frames[-1][-1])
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                if not frames[-1]:
                    raise _Fail(f"{name} with nothing to store")
                key = len(memo) if name == "MEMOIZE" else value
                if isinstance(key, int) and (key in memo or len(memo) < MAX_MEMO):
                    memo[key] = frames[-1][-1]
                else:
                    exact = False
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if isinstance(value, int) and value in memo:
                    frames[-1].append(memo[value])
                else:  # the unpickler fails here; going on is the cautious reading
                    exact = False
                    frames[-1].append(_ANY)
            elif name == "APPEND":
                if not frames[-1] or total() < 2:
                    raise _Fail("APPEND without a list")
                pop(1)
            elif name == "SETITEM":
                if len(frames[-1]) < 2 or total() < 3:
                    raise _Fail("SETITEM without a dict")
                pop(2)
            else:
                pop(len(op.stack_before))
                for _ in op.stack_after:
                    frames[-1].append(value if name in _STRINGS else _ANY)
        raise _Capped(f"more than {MAX_OPCODES} opcodes")
    except _Capped as e:
        return Walk(start, r.pos if r else start, False, tuple(imports), str(e), capped=True)
    except _Fail as e:
        return Walk(start, r.pos if r else start, False, tuple(imports), str(e))


def _arg(r: _Reader, op: pickletools.OpcodeInfo) -> object:
    """The argument of an opcode: a value where the walk needs it, else None (bytes skipped)."""
    arg = op.arg
    if arg is None:
        return None
    n = arg.n
    if op.name in ("GLOBAL", "INST"):
        module, attr = r.line(), r.line()
        if module is None or attr is None:
            return LONG_NAME, ""
        return _text(module, "utf-8"), _text(attr, "utf-8")
    if n == pickletools.UP_TO_NEWLINE:
        line = r.line()
        if line is None:
            return None  # a value too long to matter (a name, a number): consumed, not kept
        if op.name in ("GET", "PUT"):
            return int(line) if line.strip().isdigit() else None
        if op.name == "STRING":
            if len(line) < 2 or line[:1] != line[-1:] or line[:1] not in (b"'", b'"'):
                raise _Fail("STRING argument not quoted")
            try:
                return _short(codecs.escape_decode(line[1:-1])[0], "latin-1")
            except ValueError:
                raise _Fail("STRING argument with a broken escape") from None
        if op.name == "UNICODE":
            return _text(line, "raw-unicode-escape")
        return None  # numbers and persistent ids: any line (the unpicklers differ; be lenient)
    if n >= 0:
        data = r.read(n)
        if op.name in ("BINGET", "BINPUT", "EXT1", "PROTO"):
            return data[0]
        if op.name in ("LONG_BINGET", "LONG_BINPUT", "EXT2", "EXT4"):
            return int.from_bytes(data, "little", signed=op.name == "EXT4")
        return None
    width, fmt = {
        pickletools.TAKEN_FROM_ARGUMENT1: (1, "<B"),
        pickletools.TAKEN_FROM_ARGUMENT4: (4, "<i"),
        pickletools.TAKEN_FROM_ARGUMENT4U: (4, "<I"),
        pickletools.TAKEN_FROM_ARGUMENT8U: (8, "<Q"),
    }[n]
    (length,) = struct.unpack(fmt, r.read(width))
    if length < 0:
        raise _Fail(f"{op.name} with a negative length")
    if op.name in _STRINGS and length <= MAX_VALUE_CHARS * 4:
        data = r.read(length)
        return _text(data, "utf-8") if "UNICODE" in op.name else _short(data, "latin-1")
    r.skip(length)
    return None


def _text(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding, "surrogatepass" if encoding == "utf-8" else "strict")
    except UnicodeDecodeError:
        raise _Fail(f"text that is not valid {encoding}") from None


def _short(data: bytes, encoding: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode(encoding)


def classify(names: set[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(refused, dangerous): globals outside ALLOWED (dangerous first), and those picklescan
    calls dangerous."""
    refused = names - ALLOWED
    dangerous = {UNKNOWN, LONG_NAME} & refused
    dangerous |= {n for n in refused if n.startswith("extension code")}
    plain = sorted(refused - dangerous)
    if plain:
        from picklescan import scanner  # imported only when something is refused

        for name in plain:
            module, _, attr = name.rpartition(".")
            result = scanner.scan_pickle_bytes(
                io.BytesIO(_stack_global(module, attr)), "-", multiple_pickles=False
            )
            if any(g.safety == scanner.SafetyLevel.Dangerous for g in result.globals):
                dangerous.add(name)
    ordered = sorted(refused, key=lambda g: (g not in dangerous, g))
    return tuple(ordered), tuple(sorted(dangerous))


def _stack_global(module: str, attr: str) -> bytes:
    """A protocol-4 pickle importing module.attr (any characters), for picklescan to judge."""

    def unicode(s: str) -> bytes:
        data = s.encode("utf-8", "surrogatepass")
        return b"\x8d" + struct.pack("<Q", len(data)) + data

    return b"\x80\x04" + unicode(module) + unicode(attr) + b"\x93."
