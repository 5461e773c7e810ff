"""Bounded ONNX structure reader: the protobuf wire format walked with random-access reads.

Hand-written rather than the `onnx` package's parser, for memory and safety: `onnx.load` reads
the whole file into memory (and protobuf refuses messages of 2 GiB or more), while the gate
streams files of any size that strangers wrote. This reader seeks over tensor bytes instead of
loading them, checks every length against its enclosing message before reading, and caps
nesting, counts and string sizes, so a hostile file ends in a FormatError, never in a huge
allocation or a hang. It keeps what the gate verifies: the operator sets and domains, local
functions, and every stored tensor (graph initializers, sparse initializers, `Constant` nodes,
subgraphs of `If`/`Loop`/`Scan`): name, type, dims, and where its bytes are (a range of this
file, or an external data file's location, offset and length). Field numbers follow
onnx/onnx.proto3; tests cross-check the result against `onnx.load` (the `onnx` package is a test
dependency only).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterator

from gate.errors import FormatError
from gate.formats import Plan, Region

MAX_DEPTH = 24  # message nesting: model > graph > node > attribute > graph ... (subgraphs)
MAX_FIELDS = 1 << 22  # fields visited in one file: bounds the parse time (a few us each)
MAX_TEXT = 128 << 20  # names, op types, domains read in one file: bounds what is kept
MAX_TENSORS = 1 << 20
MAX_STRING = 1 << 16  # a name, op type, domain or external-data value
MAX_DIMS = 32
WINDOW = 1 << 18  # bytes read at a time while walking the structure

# TensorProto.DataType -> (the gate's dtype name, as safetensors spells it, bits per element).
# Source: onnx/onnx.proto3 `enum DataType`; a test checks the table against onnx.TensorProto.
DTYPES: dict[int, tuple[str, int]] = {
    1: ("F32", 32),
    2: ("U8", 8),
    3: ("I8", 8),
    4: ("U16", 16),
    5: ("I16", 16),
    6: ("I32", 32),
    7: ("I64", 64),
    9: ("BOOL", 8),
    10: ("F16", 16),
    11: ("F64", 64),
    12: ("U32", 32),
    13: ("U64", 64),
    14: ("C64", 64),
    15: ("C128", 128),
    16: ("BF16", 16),
    17: ("F8_E4M3", 8),
    18: ("F8_E4M3FNUZ", 8),
    19: ("F8_E5M2", 8),
    20: ("F8_E5M2FNUZ", 8),
    21: ("U4", 4),
    22: ("I4", 4),
    23: ("F4", 4),
    24: ("F8_E8M0", 8),
    25: ("U2", 2),
    26: ("I2", 2),
    27: ("F6_E2M3", 6),
    28: ("F6_E3M2", 6),
}
STRING_TYPE = 8
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
MAX_USES = 8  # uses kept per value: a weight has one; shared shape constants need no more
MAX_INTS = 32  # integer attributes kept per node (ONNX operators define a handful)
_QUOTED = re.compile(r"'([^']*)'")
# Operator domains of the ONNX standard and of ONNX Runtime's contrib operators (quantized
# MatMulNBits, attention fusions): implemented by every runtime that runs exports of
# transformers. Anything else needs code the model does not carry.
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "com.microsoft"})


@dataclasses.dataclass(frozen=True)
class External:
    """Where an externally stored tensor's bytes are: ONNX's `external_data` entries."""

    location: str  # as written: relative to the model file's folder
    offset: int
    length: int | None  # None: not written (the tensor's type and dims give its size)


@dataclasses.dataclass(frozen=True)
class OnnxTensor:
    name: str
    dtype: str  # a DTYPES name, or "STRING" (text, never digested)
    shape: tuple[int, ...]
    begin: int | None = None  # absolute range of its bytes in this file (raw or packed floats)
    end: int | None = None
    external: External | None = None
    encoded: bool = False  # values in a varint field: not the bytes a tensor file would hold
    varints: tuple[int, int] | None = None  # (start, length) of a packed varint field

    @property
    def nbytes(self) -> int | None:
        bits = next((b for n, b in DTYPES.values() if n == self.dtype), None)
        return None if bits is None else math.ceil(math.prod(self.shape) * bits / 8)


@dataclasses.dataclass(frozen=True)
class OnnxHeader:
    ir_version: int
    producer: str
    opsets: tuple[tuple[str, int], ...]  # (domain, version)
    domains: dict[str, int]  # operator domain -> nodes using it
    functions: tuple[str, ...]  # model-local functions, "domain:name"
    nodes: int
    tensors: tuple[OnnxTensor, ...]  # in the order the graph lists them
    uses: dict[str, list[Use]] = dataclasses.field(default_factory=dict)  # value -> readers
    graph: tuple[Node, ...] = ()  # the main graph's nodes, in the file's (topological) order

    @property
    def custom_domains(self) -> list[str]:
        return sorted(d for d in self.domains if d not in STANDARD_DOMAINS)

    @property
    def external_files(self) -> list[str]:
        return sorted({t.external.location for t in self.tensors if t.external is not None})


ReadAt = Callable[[int, int], bytes]  # (offset, length) -> bytes of the file


class _Source:
    """Random access to the file through one window of WINDOW bytes."""

    def __init__(self, size: int, read_at: ReadAt) -> None:
        self.size = size
        self.read_at = read_at
        self.start = 0
        self.buf = b""
        self.fields = 0
        self.text_bytes = 0

    def byte(self, at: int) -> int:
        if not self.start <= at < self.start + len(self.buf):
            self.buf = self.read_at(at, min(WINDOW, self.size - at))
            self.start = at
            if not self.buf:
                raise FormatError(f"the file ended at byte {at}")
        return self.buf[at - self.start]

    def bytes(self, at: int, n: int) -> bytes:
        if self.start <= at and at + n <= self.start + len(self.buf):
            return self.buf[at - self.start : at - self.start + n]
        data = self.read_at(at, n)
        if len(data) != n:
            raise FormatError(f"the file ended inside a field at byte {at}")
        return data

    def varint(self, at: int, end: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if at >= end:
                raise FormatError(f"a varint runs past its message at byte {at}")
            b = self.byte(at)
            at += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value, at
            shift += 7
            if shift >= 70:
                raise FormatError(f"a varint longer than 10 bytes at byte {at}")

    def fields_of(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """(field number, wire type, value start, value: a varint's value or a length) of each
        field of the message in [start, end); length-delimited values are not read."""
        at = start
        while at < end:
            self.fields += 1
            if self.fields > MAX_FIELDS:
                raise FormatError(f"more than {MAX_FIELDS} protobuf fields")
            key, at = self.varint(at, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise FormatError(f"field number 0 at byte {at}")
            if wire == 0:
                value, nxt = self.varint(at, end)
                yield number, wire, at, value
                at = nxt
            elif wire in (1, 5):
                width = 8 if wire == 1 else 4
                if at + width > end:
                    raise FormatError(f"a fixed-width field runs past its message at byte {at}")
                yield number, wire, at, width
                at += width
            elif wire == 2:
                length, at = self.varint(at, end)
                if length > end - at:
                    raise FormatError(
                        f"field {number} at byte {at} declares {length} bytes; its message"
                        f" has {end - at} left"
                    )
                yield number, wire, at, length
                at += length
            else:
                raise FormatError(f"unsupported protobuf wire type {wire} at byte {at}")

    def text(self, at: int, length: int, what: str) -> str:
        if length > MAX_STRING:
            raise FormatError(f"{what} of {length} bytes (over {MAX_STRING})")
        self.text_bytes += length
        if self.text_bytes > MAX_TEXT:
            raise FormatError(f"over {MAX_TEXT} bytes of names and strings")
        try:
            return self.bytes(at, length).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{what} at byte {at} is not valid UTF-8") from None

    def packed_varints(self, at: int, length: int) -> list[int]:
        out, end = [], at + length
        while at < end:
            value, at = self.varint(at, end)
            out.append(value)
        return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclasses.dataclass(frozen=True)
class Use:
    """A node reading a value: what the graph says a stored tensor is for."""

    op: str  # op_type
    index: int  # which input of the node
    scope: str  # the exporting module's path ('model.layers.0.self_attn.q_proj'), or ""
    inputs: tuple[str, ...] = ()  # all the node's inputs (a quantized weight's scale and zero)
    outputs: tuple[str, ...] = ()
    ints: tuple[tuple[str, int], ...] = ()  # its integer attributes (transB, axis, K, N, bits)

    def attr(self, name: str, default: int = 0) -> int:
        return next((v for k, v in self.ints if k == name), default)

    @property
    def trans_b(self) -> bool:
        return self.attr("transB") != 0  # Gemm

    @property
    def axis(self) -> int:
        return self.attr("axis", 1)  # DequantizeLinear (1 when not written)


@dataclasses.dataclass(frozen=True)
class Node:
    """A node of the main graph, as the lineage reader's topology pass needs it."""

    op: str
    domain: str  # "" for the standard operators
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclasses.dataclass
class _Attribute:
    name: str = ""
    value: int = 0
    has_value: bool = False
    tensors: list[tuple[int, int, str]] = dataclasses.field(default_factory=list)


def _scope(name: str, scopes: str) -> str:
    """The module path an exporter recorded for a node: torch.onnx's dynamo exporter in the
    `pkg.torch.onnx.name_scopes` metadata (['', 'model', ..., 'model.layers.0.mlp.up_proj',
    'linear']), the TorchScript exporter and Optimum in the node name
    ('/model/layers.0/mlp/up_proj/MatMul'). "" when neither says."""
    if scopes:
        found = _QUOTED.findall(scopes)
        if len(found) >= 2:
            return str(found[-2])
    if name.startswith("/") and name.count("/") >= 2:
        return ".".join(p for p in name.split("/")[1:-1] if p)
    return ""


class _Walk:
    def __init__(self, src: _Source) -> None:
        self.src = src
        self.uses: dict[str, list[Use]] = {}
        self.tensors: list[OnnxTensor] = []
        self.domains: dict[str, int] = {}
        self.functions: list[str] = []
        self.nodes = 0
        self.graph_nodes: list[Node] = []

    def _need(self, wire: int, want: int, what: str, at: int) -> None:
        if wire != want:
            raise FormatError(f"{what} at byte {at} has wire type {wire}, expected {want}")

    def model(self) -> OnnxHeader:
        src = self.src
        ir_version, producer, opsets = 0, "", []
        graphs = 0
        for number, wire, at, value in src.fields_of(0, src.size):
            if number == 1:
                self._need(wire, 0, "ir_version", at)
                ir_version = value
            elif number == 2 and wire == 2:
                producer = src.text(at, value, "producer_name")
            elif number == 8:
                self._need(wire, 2, "opset_import", at)
                opsets.append(self.opset(at, at + value))
            elif number == 7:
                self._need(wire, 2, "graph", at)
                graphs += 1
                self.graph(at, at + value, 1)
            elif number == 25:
                self._need(wire, 2, "functions", at)
                self.function(at, at + value, 1)
        if ir_version <= 0 or graphs != 1:
            raise FormatError(
                "not an ONNX model: no ir_version"
                if ir_version <= 0
                else f"an ONNX model holds one graph, this one {graphs}"
            )
        return OnnxHeader(
            ir_version=ir_version,
            producer=producer,
            opsets=tuple(opsets),
            domains=dict(self.domains),
            functions=tuple(self.functions),
            nodes=self.nodes,
            tensors=tuple(self.tensors),
            uses=self.uses,
            graph=tuple(self.graph_nodes),
        )

    def opset(self, start: int, end: int) -> tuple[str, int]:
        domain, version = "", 0
        for number, wire, at, value in self.src.fields_of(start, end):
            if number == 1 and wire == 2:
                domain = self.src.text(at, value, "opset domain")
            elif number == 2 and wire == 0:
                version = _signed(value)
        return domain, version

    def _depth(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise FormatError(f"graphs nested deeper than {MAX_DEPTH} levels")

    def graph(self, start: int, end: int, depth: int) -> None:
        self._depth(depth)
        for number, wire, at, value in self.src.fields_of(start, end):
            if wire != 2:
                continue
            if number == 1:
                self.node(at, at + value, depth + 1, main=depth == 1)
            elif number == 5:
                self.tensor(at, at + value)
            elif number == 15:
                self.sparse(at, at + value)

    def function(self, start: int, end: int, depth: int) -> None:
        self._depth(depth)
        name = domain = ""
        for number, wire, at, value in self.src.fields_of(start, end):
            if wire != 2:
                continue
            if number == 1:
                name = self.src.text(at, value, "function name")
            elif number == 10:
                domain = self.src.text(at, value, "function domain")
            elif number == 7:
                self.node(at, at + value, depth + 1)
        self.functions.append(f"{domain}:{name}")

    def node(self, start: int, end: int, depth: int, main: bool = False) -> None:
        self._depth(depth)
        self.nodes += 1
        op = domain = name = scopes = ""
        inputs: list[str] = []
        outputs: list[str] = []
        ints: dict[str, int] = {}
        constants: list[tuple[int, int, str]] = []  # tensor attributes: (start, end, name)
        for number, wire, at, value in self.src.fields_of(start, end):
            if wire != 2:
                continue
            if number == 4:
                op = self.src.text(at, value, "op_type")
            elif number == 7:
                domain = self.src.text(at, value, "node domain")
            elif number == 3:
                name = self.src.text(at, value, "node name")
            elif number == 1:
                inputs.append(self.src.text(at, value, "node input"))
            elif number == 2:
                outputs.append(self.src.text(at, value, "node output"))
            elif number == 9:
                key, text = self.entry(at, at + value, only=SCOPES_KEY)
                scopes = text if key == SCOPES_KEY else scopes
            elif number == 5:
                attr = self.attribute(at, at + value, depth + 1)
                constants += attr.tensors
                if attr.has_value and len(ints) < MAX_INTS:
                    ints[attr.name] = attr.value
        self.domains[domain] = self.domains.get(domain, 0) + 1
        scope = _scope(name, scopes)
        ins, outs = tuple(inputs), tuple(outputs)  # shared by every input's Use
        attrs = tuple(ints.items())
        if main:  # the model's graph (not a function body or an If/Loop subgraph)
            self.graph_nodes.append(Node(op, domain, ins, outs))
        for i, x in enumerate(inputs):
            if x and len(self.uses.setdefault(x, [])) < MAX_USES:
                self.uses[x].append(Use(op, i, scope, ins, outs, attrs))
        for a, b, attr_name in constants:
            # the graph knows a Constant's value by the node's output; other tensor attributes
            # keep their own name, else the node output and attribute name
            if op == "Constant" and outputs:
                self.tensor(a, b, name=outputs[0])
            else:
                self.tensor(a, b, default_name=f"{outputs[0] if outputs else op}:{attr_name}")

    def attribute(self, start: int, end: int, depth: int) -> _Attribute:
        out = _Attribute()
        for number, wire, at, value in self.src.fields_of(start, end):
            if number == 3 and wire == 0:
                out.value, out.has_value = _signed(value), True
            if wire != 2:
                continue
            if number == 1:
                out.name = self.src.text(at, value, "attribute name")
            elif number in (5, 10):  # t, tensors
                out.tensors.append((at, at + value, ""))
            elif number in (6, 11):  # g, graphs
                self.graph(at, at + value, depth + 1)
            elif number in (22, 23):  # sparse_tensor, sparse_tensors
                self.sparse(at, at + value)
        out.tensors = [(a, b, out.name) for a, b, _ in out.tensors]
        return out

    def sparse(self, start: int, end: int) -> None:
        parts = [
            (number, at, value)
            for number, wire, at, value in self.src.fields_of(start, end)
            if wire == 2 and number in (1, 2)
        ]
        values = [p for p in parts if p[0] == 1]
        base = self.tensor(values[0][1], values[0][1] + values[0][2]) if values else None
        for number, at, value in parts:
            if number == 2:
                self.tensor(at, at + value, default_name=f"{base or 'sparse'}.indices")

    def tensor(self, start: int, end: int, default_name: str = "", name: str = "") -> str:
        src = self.src
        if len(self.tensors) >= MAX_TENSORS:
            raise FormatError(f"more than {MAX_TENSORS} stored tensors")
        dims: list[int] = []
        dtype_code, own = 0, ""
        raw: tuple[int, int] | None = None
        packed: tuple[int, int, int] | None = None  # (field, start, length)
        external: dict[str, str] = {}
        location = 0
        for number, wire, at, value in src.fields_of(start, end):
            if number == 1:
                dims += [value] if wire == 0 else src.packed_varints(at, value) if wire == 2 else []
                if len(dims) > MAX_DIMS:
                    raise FormatError(f"a tensor at byte {start} has over {MAX_DIMS} dims")
            elif number == 2 and wire == 0:
                dtype_code = value
            elif number == 8 and wire == 2:
                own = src.text(at, value, "tensor name")
            elif number == 9 and wire == 2:
                raw = (at, value)
            elif number in (4, 5, 6, 7, 10, 11) and wire == 2:
                packed = (number, at, value)
            elif number in (4, 5, 7, 10, 11) and wire in (0, 1, 5):
                packed = (number, at, -1)  # unpacked repeated values: encoded
            elif number == 13 and wire == 2:
                key, val = self.entry(at, at + value)
                external[key] = val
            elif number == 14 and wire == 0:
                location = value
        name = name or own or default_name
        signed = [_signed(d) for d in dims]
        if any(d < 0 for d in signed):
            raise FormatError(f"tensor {name!r} has a negative dimension")
        shape = tuple(signed)
        if dtype_code == STRING_TYPE:  # text, not numbers: never digested as a tensor
            self.tensors.append(OnnxTensor(name, "STRING", shape, encoded=True))
            return name
        if dtype_code not in DTYPES:
            raise FormatError(f"tensor {name!r} has unknown data type {dtype_code}")
        dtype, bits = DTYPES[dtype_code]
        need = math.ceil(math.prod(shape) * bits / 8)
        if location == 1 or external:
            ext = self.external(name, external)
            if ext.length is not None and ext.length != need:
                raise FormatError(
                    f"tensor {name!r}: external data of {ext.length} bytes; {dtype} x"
                    f" {list(shape)} needs {need}"
                )
            self.tensors.append(OnnxTensor(name, dtype, shape, external=ext))
            return name
        if raw is not None:
            if raw[1] != need:
                raise FormatError(
                    f"tensor {name!r}: raw_data of {raw[1]} bytes; {dtype} x {list(shape)}"
                    f" needs {need}"
                )
            self.tensors.append(OnnxTensor(name, dtype, shape, raw[0], raw[0] + raw[1]))
        elif packed is not None:
            field, at, length = packed
            # float_data of FLOAT and double_data of DOUBLE are stored little-endian: the same
            # bytes a tensor file holds. Other typed fields are varints (encoded).
            same = (field, dtype_code) in ((4, 1), (10, 11)) and length == need
            if same:
                self.tensors.append(OnnxTensor(name, dtype, shape, at, at + length))
            else:
                varints = (at, length) if field in (5, 7, 11) and length >= 0 else None
                self.tensors.append(OnnxTensor(name, dtype, shape, encoded=True, varints=varints))
        else:
            self.tensors.append(OnnxTensor(name, dtype, shape, encoded=need > 0))
        return name

    def entry(self, start: int, end: int, only: str | None = None) -> tuple[str, str]:
        """A StringStringEntryProto; only: read the value only under this key (node metadata
        holds long stack traces nobody here needs)."""
        key = ""
        value: tuple[int, int] | None = None
        for number, wire, at, length in self.src.fields_of(start, end):
            if number == 1 and wire == 2:
                key = self.src.text(at, length, "entry key")
            elif number == 2 and wire == 2:
                value = (at, length)
        if value is None or (only is not None and key != only):
            return key, ""
        return key, self.src.text(value[0], value[1], "entry value")

    @staticmethod
    def external(name: str, entries: dict[str, str]) -> External:
        location = entries.get("location", "")
        if not location:
            raise FormatError(f"tensor {name!r} is stored externally without a location")

        def number(key: str) -> int | None:
            text = entries.get(key)
            if text is None:
                return None
            if not text.isdigit() or len(text) > 20:
                raise FormatError(f"tensor {name!r}: external data {key} {text!r}")
            return int(text)

        return External(location, number("offset") or 0, number("length"))


def parse(size: int, read_at: ReadAt) -> OnnxHeader:
    """The structure of an ONNX model of `size` bytes; FormatError when it is not one."""
    if size == 0:
        raise FormatError("empty file")
    return _Walk(_Source(size, read_at)).model()


def read(path: str) -> OnnxHeader:
    """Parse a file by path (regular files only)."""
    from gate import paths

    with paths.open_regular(path) as f:
        fd = f.fileno()
        return parse(os.fstat(fd).st_size, lambda at, n: os.pread(fd, n, at))


MAX_VARINT_VALUES = 1 << 16  # small tensors only: zero points, shapes


def varint_values(t: OnnxTensor, read_at: ReadAt) -> list[int]:
    """The integers of a tensor kept in a packed varint field (int32_data, int64_data,
    uint64_data: zero points, shapes), as signed values of the tensor's dtype."""
    if t.varints is None:
        raise FormatError(f"tensor {t.name!r} has no packed varint field")
    at, length = t.varints
    if length > MAX_VARINT_VALUES * 10:
        raise FormatError(f"tensor {t.name!r}: over {MAX_VARINT_VALUES} varint values")
    src = _Source(at + length, read_at)
    values = src.packed_varints(at, length)
    if len(values) != math.prod(t.shape):
        raise FormatError(f"tensor {t.name!r}: {len(values)} values for dims {list(t.shape)}")
    signed = t.dtype in ("I8", "I16", "I32", "I64")
    out = []
    for v in values:
        v = _signed(v)
        if signed and t.dtype != "I64":  # int32_data holds the value sign-extended
            v = (v + (1 << 31)) % (1 << 32) - (1 << 31)
        out.append(v)
    return out


def plan(header: OnnxHeader) -> Plan:
    """Per-tensor digests over the tensors stored as bytes: in this file (file offsets), and
    in external data files (offsets in those; hashing reads them from the model's folder)."""
    regions, external = [], []
    bits = {n: b for n, b in DTYPES.values()}
    for t in header.tensors:
        if t.dtype not in bits:  # text
            continue
        width = max(1, bits[t.dtype] // 8)
        if t.begin is not None and t.end is not None:
            regions.append(Region(t.name, t.dtype, t.shape, t.begin, t.end, width))
        elif t.external is not None and (t.external.length or t.nbytes) is not None:
            end = t.external.offset + (t.external.length or t.nbytes or 0)
            region = Region(t.name, t.dtype, t.shape, t.external.offset, end, width)
            external.append((t.external.location, region))
    external.sort(key=lambda e: (e[0], e[1].begin))
    return Plan(tuple(sorted(regions, key=lambda r: r.begin)), 0, tuple(external))


class IncrementalHeader:
    """Parses the model's structure once, at the first chunk, reading what it needs with
    pread (the tensor bytes are skipped, then digested as the hashing stream passes them)."""

    def __init__(self, size: int, fd: int) -> None:
        self.size = size
        self.fd = fd
        self.header: OnnxHeader | None = None
        self.error: str | None = None

    def feed(self, chunk: memoryview, offset: int) -> bool:
        if self.header is not None or self.error is not None:
            return True
        try:
            self.header = parse(self.size, lambda at, n: os.pread(self.fd, n, at))
        except FormatError as e:
            self.error = e.message
        return True

    @property
    def plan(self) -> Plan | None:
        return None if self.header is None else plan(self.header)
