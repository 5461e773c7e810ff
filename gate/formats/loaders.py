"""What common loaders would unpickle in a file, whatever its name says: every interpretation.

A file is read the way each loader in the threat model reads it, and never loaded:
- `pickle.load`, and `numpy.load(allow_pickle=True)` on anything that is not .npy/.npz: pickle
  opcodes from byte 0 (protocol 0 and 1 have no magic number);
- `torch.load(weights_only=False)`: a zip archive (its pickles), else a legacy tar archive
  (refused: its members interleave pickles and raw bytes), else up to five pickles from byte 0;
- `numpy.load(allow_pickle=True)`: a .npy whose dtype holds objects (a pickle after the header),
  a zip of them (.npz);
- `joblib.load`: the file, or the file decompressed (zlib, gzip, bz2, xz, lzma, the old `ZF`
  format; lz4 cannot be decompressed here, so it is refused).
Archives are entered (zip entries and tar members are read as pickles too, as `pandas` reads a
single-member archive), to MAX_DEPTH. A file is pickle-family when some loader would unpickle a
value from it; it is executable when that would import a global outside the allowlist, or when
what a loader would read could not be read completely (fail closed). A file that is both another
format and a pickle that imports something is a polyglot: loaders would disagree about it.
"""

from __future__ import annotations

import bz2
import dataclasses
import functools
import gzip
import io
import lzma
import os
import zlib
from typing import Any, BinaryIO, cast

try:  # the stream reader behind LZMAFile, GzipFile and BZ2File, used for lzma and zlib here
    from compression._common._streams import (  # type: ignore[import-not-found,unused-ignore]
        DecompressReader as _DecompressReader,
    )
except ImportError:  # Python < 3.14
    from _compression import DecompressReader as _DecompressReader

from gate import paths
from gate.errors import FormatError
from gate.formats import npy, pickles, registry, sniff, tars, zips
from gate.formats.exposure import Kind, PickleScan
from gate.formats.pickles import MAX_PICKLE_BYTES, Walk

MAX_DEPTH = 2  # archives inside archives
LZMA_MEMLIMIT = 64 << 20  # decoder memory; xz's and joblib's presets up to 8 fit (xz -9: 65 MiB)
MAX_LEADING_PICKLES = 5  # legacy torch files: magic, protocol, sys info, data, storage keys
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")
_JOBLIB_ZF_HEADER = 2 + 19  # b"ZF" + the length in hex, padded (joblib's _MAX_LEN)
# joblib's compressor prefixes (joblib/compressor.py), checked in its order.
_COMPRESSED = (
    (b"ZF", "joblib zlib (old ZF format)"),
    (b"\x78", "zlib"),
    (b"\x1f\x8b", "gzip"),
    (b"BZ", "bz2"),
    (b"\x5d\x00", "lzma"),
    (b"\xfd7zXZ", "xz"),
    (b"\x04\x22\x4d\x18", "lz4"),
)


@dataclasses.dataclass
class _Found:
    imports: set[str] = dataclasses.field(default_factory=set)
    errors: list[str] = dataclasses.field(default_factory=list)
    risks: list[str] = dataclasses.field(default_factory=list)  # errors where code could run
    loads: list[str] = dataclasses.field(default_factory=list)
    pickle: bool = False

    def fail(self, where: str, message: str, *, risk: bool = True) -> None:
        """Record what could not be read; risk: a loader would run what could not be followed."""
        text = f"{where}: {message}" if where else message
        self.errors.append(text)
        if risk:
            self.risks.append(text)
            self.pickle = True


def scan(path: str, name: str | None = None) -> PickleScan:
    """Every pickle a common loader could read in the file at path; name: its name in the
    repository (a pickle-family suffix makes unreadable content an error, not a non-pickle)."""
    named = sniff.named(name or path) == "pickle"  # not a Core ML package's weight.bin
    with paths.open_regular(path) as raw, io.BufferedReader(raw) as f:
        size = os.fstat(raw.fileno()).st_size
        return scan_stream(f, size, named)


def scan_stream(f: BinaryIO, size: int, named: bool = False) -> PickleScan:
    """The same, for an open seekable stream of `size` bytes."""
    found = _Found()
    f.seek(0)
    head = f.read(16)
    outer = _structure(head, size)
    if outer == "hdf5":
        _keras_h5(f, size, found)
    inner = _inner(f, head, size, "", found, 0)
    structure = outer or inner
    expect = (named and structure is None) or _magic(head)
    raw = _raw(f, size, "", found, expect=expect)
    if raw != "none":
        found.loads.insert(0, "pickle.load (and the loaders that fall back to it): the file itself")
    if raw == "code" or (raw == "data" and structure is None) or (expect and raw == "none"):
        found.pickle = True
    refused, dangerous = pickles.classify(found.imports)
    return PickleScan(
        globals=tuple(sorted(found.imports)),
        refused=refused,
        dangerous=dangerous,
        error="; ".join(dict.fromkeys(found.errors)) or None,
        risk="; ".join(dict.fromkeys(found.risks)) or None,
        loads=tuple(dict.fromkeys(found.loads)),
        raw=raw,
        structure=structure,
        pickle=found.pickle,
    )


def _magic(head: bytes) -> bool:
    """The protocol 2+ pickle header (what sniffing calls a pickle)."""
    return head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")


def _structure(head: bytes, size: int) -> str | None:
    """A format the first bytes announce other than pickle (archives are found by _inner)."""
    fmt = sniff.sniff(head, "", size)
    return fmt if registry.BY_NAME[fmt].announces else None


def _raw(
    f: BinaryIO, size: int, where: str, found: _Found, *, expect: bool, exact: bool = False
) -> Kind:
    """Pickles from byte 0, as pickle.load (the first) and legacy torch.load (up to five) read
    them. expect: the stream should be a pickle (magic byte or name): unreadable is an error.
    exact: a decoding stream (a zip entry), read only as far as an unpickler would."""
    walks: list[Walk] = []
    start = 0
    while len(walks) < MAX_LEADING_PICKLES and start < size:
        w = pickles.walk(f, start, size, exact=exact)
        walks.append(w)
        if not w.complete:
            break
        start = w.end
    kinds = [w.kind for w in walks]
    kind: Kind = "code" if "code" in kinds else "data" if "data" in kinds else "none"
    for w in walks:
        found.imports.update(w.imports)
    last = walks[-1] if walks else None
    # Fail closed: a stream that imports something and then breaks (or hits a cap) is a risk;
    # a stream that should be a pickle and is not one whole pickle (or five) is invalid.
    if last is not None and not last.complete and last.kind == "code":
        found.fail(where, f"a pickle that cannot be followed to its end ({last.error})")
    elif expect and (last is None or not last.complete):
        reason = last.error if last is not None else "the file is empty"
        found.fail(where, f"not a valid pickle ({reason})", risk=False)
    return kind


def _inner(
    f: BinaryIO, head: bytes, size: int, where: str, found: _Found, depth: int
) -> str | None:
    """Archives, arrays and compressed streams: what loaders read inside them."""
    if head.startswith(_ZIP):
        _zip(f, where, found, depth)
        return "zip"
    if head.startswith(npy.MAGIC):
        _npy(f, size, where, found)
        return "npy"
    try:
        listed = tars.members(f)
    except FormatError as e:
        found.fail(where, e.message)
        return "tar"
    if listed is not None:
        _tar(f, listed, where, found, depth)
        return "tar"
    for prefix, kind in _COMPRESSED:
        if head.startswith(prefix):
            return _compressed(f, kind, where, found)
    return None


def _zip(f: BinaryIO, where: str, found: _Found, depth: int) -> None:
    try:
        entries = zips.layout(f)
    except FormatError as e:  # torch.load would open it: fail closed
        found.fail(where, f"unreadable or ambiguous zip archive ({e.message})")
        return
    import zipfile  # after zips.layout: zipfile now sees exactly these entries

    f.seek(0)
    files = [entry for entry in entries if not entry.is_dir]
    with zipfile.ZipFile(f) as archive:
        names = {e.name for e in files}
        if "config.json" in names and names & {"model.weights.h5", "metadata.json"}:
            _keras_zip(archive, where, found)
        for entry in files:
            inner = f"{where}:{entry.name}" if where else entry.name
            try:  # a decoder error (a CRC checked at the entry's end) leaves the head short
                with archive.open(entry.name) as member:
                    head = member.read(16)
            except Exception:
                head = b""
            with archive.open(entry.name) as member:
                stream = cast("BinaryIO", member)
                _entry(stream, head, entry, inner, found, depth, only=len(files) == 1)


MAX_KERAS_CONFIG = 64 << 20  # config.json of a .keras archive
KERAS_LAMBDA = "keras.layers.Lambda"  # what a Lambda layer amounts to: code, never allowed
# Keras 2 (tf.keras, HDF5) writes the model config as json.dumps(...) in a root attribute, a
# Lambda layer as `"class_name": "Lambda"` with its function as marshalled bytecode.
_H5_LAMBDA = (b'"class_name": "Lambda"', b'"function_type": "lambda"')


def _keras_lambda(found: _Found, where: str, how: str, names: list[str]) -> None:
    layers = ", ".join(repr(n) for n in names[:4]) + (" ..." if len(names) > 4 else "")
    found.imports.add(KERAS_LAMBDA)
    found.loads.append(
        f"{how}{f' ({where})' if where else ''}: Lambda layer {layers} holds Python bytecode"
        " that deserialising it runs"
    )
    found.pickle = True


def _keras_zip(archive: Any, where: str, found: _Found) -> None:
    """A Keras `.keras` archive's config.json, searched for Lambda layers (marshalled Python
    functions: `keras.saving.load_model` rebuilds them, with safe_mode off or in tf.keras)."""
    import json

    try:
        with archive.open("config.json") as member:
            text = member.read(MAX_KERAS_CONFIG + 1)
        if len(text) > MAX_KERAS_CONFIG:
            raise ValueError(f"config.json over {MAX_KERAS_CONFIG} bytes")
        config = json.loads(text)
    except (ValueError, RecursionError, OSError) as e:  # fail closed: it may hold a Lambda
        found.fail(where or "config.json", f"Keras config.json unreadable ({e})")
        return
    names: list[str] = []
    stack: list[Any] = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                cfg = node.get("config")
                names.append(str(cfg.get("name", "?")) if isinstance(cfg, dict) else "?")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    if names:
        _keras_lambda(found, where, "keras.saving.load_model", names)


def _keras_h5(f: BinaryIO, size: int, found: _Found) -> None:
    """A legacy Keras HDF5 model: its model_config attribute is plain JSON bytes somewhere in
    the file (attributes are never compressed), searched for a Lambda layer."""
    f.seek(0)
    tail = b""
    keep = max(len(p) for p in _H5_LAMBDA)
    while chunk := f.read(1 << 20):
        window = tail + chunk
        if any(p in window for p in _H5_LAMBDA):
            _keras_lambda(found, "", "tf.keras.models.load_model (Keras 2, HDF5)", ["?"])
            return
        tail = window[-keep:]


def _entry(
    member: BinaryIO,
    head: bytes,
    e: zips.Entry,
    inner: str,
    found: _Found,
    depth: int,
    *,
    only: bool,
) -> None:
    """A zip entry as loaders read it: torch unpickles `*.pkl` entries (its `data/N` storages
    are raw bytes), numpy reads `.npy` entries, nested archives are entered, and the one file
    of a single-file archive is read as a pickle (pandas.read_pickle does)."""
    if head.startswith(_ZIP):
        if depth + 1 >= MAX_DEPTH or e.size > MAX_PICKLE_BYTES:
            found.fail(inner, f"archives nested deeper than {MAX_DEPTH} (or over the size limit)")
            return
        try:
            data = member.read(MAX_PICKLE_BYTES + 1)
        except Exception as error:  # zipfile's CRC or inflate error: unreadable to loaders too
            found.fail(inner, f"a nested archive that cannot be read ({type(error).__name__})")
            return
        if len(data) != e.size:
            found.fail(inner, "its size differs from the directory's")
            return
        _zip(io.BytesIO(data), inner, found, depth + 1)
        return
    if head.startswith(npy.MAGIC):
        _npy(member, e.size, inner, found)
        return
    pickled = e.name.endswith((".pkl", ".pickle"))
    if not (pickled or only):
        return
    kind = _raw(member, e.size, inner, found, expect=pickled, exact=True)
    if kind == "code" or pickled:
        found.pickle = True
        found.loads.append(f"torch.load: zip entry {inner}" if pickled else f"pickle.load: {inner}")


def _npy(f: BinaryIO, size: int, where: str, found: _Found) -> None:
    try:
        offset, descr = npy.header(f)
    except FormatError as e:  # numpy.load parses some headers more leniently: fail closed
        found.fail(where, e.message)
        return
    if not npy.has_objects(descr):
        return
    w = pickles.walk(f, offset, size, exact=True)
    found.imports.update(w.imports)
    if w.kind == "none":
        return  # numpy.load's pickle.load fails at once: nothing runs
    found.pickle = True
    found.loads.append(f"numpy.load: object array{_at(where)}")
    if not w.complete:
        found.fail(where, f"object array: a pickle that cannot be followed ({w.error})")


def _tar(
    f: BinaryIO, members: tuple[tars.Member, ...], where: str, found: _Found, depth: int
) -> None:
    torch_names = sorted({m.name for m in members} & tars.TORCH_MEMBERS)
    if torch_names:
        found.loads.append(f"torch.load: legacy tar checkpoint{_at(where)}")
        found.fail(
            where,
            f"legacy torch tar checkpoint (members {', '.join(torch_names)}): torch unpickles"
            " them between raw storage bytes, which no static scan can follow; refused in every"
            " policy",
        )
        return
    files = [m for m in members if m.regular and m.size]
    if len(files) != 1:
        return  # only a single-file archive is read as a pickle (pandas.read_pickle)
    for m in files:
        inner = f"{where}:{m.name}" if where else m.name
        window = cast("BinaryIO", _Window(f, m.offset, m.size))
        if _raw(window, m.size, inner, found, expect=False) == "code":
            found.pickle = True
            found.loads.append(f"pickle.load: tar member {inner}")


def _compressed(f: BinaryIO, kind: str, where: str, found: _Found) -> str | None:
    """joblib.load decompresses by magic number, then unpickles."""
    if kind == "lz4":
        found.loads.append(f"joblib.load: lz4{_at(where)}")
        found.fail(
            where,
            "lz4-compressed: joblib.load would decompress and unpickle it; lz4"
            " cannot be read here, so it is refused",
        )
        return kind
    f.seek(0)
    limited = [False]
    stream = _decompressing(f, kind, limited)
    w = pickles.walk(stream, 0, 1 << 62, exact=True)
    found.imports.update(w.imports)
    if limited[0]:
        found.loads.append(f"joblib.load: {kind}-compressed{_at(where)}")
        found.fail(
            where,
            f"an {kind} stream that needs more than {LZMA_MEMLIMIT >> 20} MiB to decode (its header"
            " asks for it); joblib.load would allocate it and unpickle the result, so it is"
            " refused unread",
        )
        return kind
    if w.kind == "none":  # not a pickle inside (or not compressed at all): joblib.load fails
        return kind if w.end > 0 else None
    found.pickle = True
    found.loads.append(f"joblib.load: {kind}-compressed pickle{_at(where)}")
    if not w.complete:
        found.fail(where, f"{kind}-compressed pickle that cannot be followed ({w.error})")
    return kind


def _decompressing(f: BinaryIO, kind: str, limited: list[bool]) -> BinaryIO:
    """The decompressed stream joblib would read, through the stdlib reader behind GzipFile,
    BZ2File and LZMAFile (lzma with a memory limit: limited[0] is set when a header asks for
    more than it)."""
    if kind == "gzip":
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if kind == "bz2":
        return bz2.BZ2File(f)  # type: ignore[return-value]
    if kind in ("xz", "lzma"):
        fmt = lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE
        reader = _DecompressReader(
            f, functools.partial(_LimitedLzma, limited), trailing_error=lzma.LZMAError, format=fmt
        )
        return io.BufferedReader(reader)
    if kind.startswith("joblib"):
        f.seek(_JOBLIB_ZF_HEADER)
        if f.read(1) != b" ":  # joblib <= 0.8.4 wrote one more space
            f.seek(_JOBLIB_ZF_HEADER)
    return io.BufferedReader(_DecompressReader(f, _Zlib, trailing_error=zlib.error))


class _Decompressor:
    """What the stdlib stream reader asks of a decompressor `d` beyond decompress()."""

    d: Any

    @property
    def eof(self) -> bool:
        return bool(self.d.eof)

    @property
    def unused_data(self) -> bytes:
        return bytes(self.d.unused_data)


class _LimitedLzma(_Decompressor):
    """lzma.LZMADecompressor under LZMA_MEMLIMIT: an lzma or xz header may declare a
    dictionary of gigabytes, which liblzma allocates before decoding a byte (found by fuzzing:
    1.4 GB from a 16-byte file). LZMAFile cannot take a limit; this goes into the same stdlib
    stream reader LZMAFile uses, so concatenated streams and trailing data behave the same."""

    def __init__(self, limited: list[bool], **kwargs: Any) -> None:
        self.limited = limited
        self.d = lzma.LZMADecompressor(memlimit=LZMA_MEMLIMIT, **kwargs)

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        try:
            out: bytes = self.d.decompress(data, max_length)
            return out
        except lzma.LZMAError as e:
            if "limit" in str(e).lower():  # "Memory usage limit reached"
                self.limited[0] = True
            raise

    @property
    def needs_input(self) -> bool:
        return bool(self.d.needs_input)


class _Zlib(_Decompressor):
    """zlib.decompressobj with the interface of the stdlib stream reader's decompressors
    (`needs_input` from its unconsumed input), so zlib streams are read like the others."""

    def __init__(self) -> None:
        self.d = zlib.decompressobj()
        self.tail = b""

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        out: bytes = self.d.decompress(self.tail + data, max(max_length, 0))
        self.tail = self.d.unconsumed_tail
        return out

    @property
    def needs_input(self) -> bool:
        return not self.tail


class _Window(io.RawIOBase):
    """A byte range of a stream as a stream of its own (a tar member's data)."""

    def __init__(self, inner: BinaryIO, start: int, length: int) -> None:
        self.inner = inner
        self.start = start
        self.length = length
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = max(0, min(len(b), self.length - self.pos))
        self.inner.seek(self.start + self.pos)
        data = self.inner.read(n)
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)


def _at(where: str) -> str:
    return f" ({where})" if where else ""
