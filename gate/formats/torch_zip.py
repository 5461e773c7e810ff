"""The tensor table of a torch zip checkpoint (`torch.save` since 1.6), read without unpickling.

A torch checkpoint is a zip of `<archive>/data.pkl` (the object graph) and one entry per storage
(`<archive>/data/<key>`, stored uncompressed). Loading it means unpickling data.pkl, which runs
whatever callables it names. Here data.pkl is *evaluated symbolically* instead: the opcodes are
parsed by `pickletools.genops` (bounded: the pickle is capped and held in memory), containers and
scalars are built as plain values, and only the four callables torch.save emits for tensors are
recognised by name, never imported or called: `torch._utils._rebuild_tensor_v2` (storage,
offset, size, stride, ...) becomes a tensor record, `_rebuild_parameter` its data, and
`collections.OrderedDict` an empty dict; any other callable yields an opaque value. Storages come
from persistent ids `('storage', torch.<Type>Storage, key, location, numel)`. What results is a
name -> (dtype, shape, byte range in the file) table for the lineage tiers, whatever else the
pickle would have done when loaded (that is the loader scan's business, formats/pickles.py).

Hand-written (no library reads torch checkpoints without unpickling them); safety: nothing is
imported or executed, every count and size is capped, and a tensor's range must lie inside its
storage entry.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickletools
from typing import Any

from gate import paths
from gate.errors import FormatError
from gate.formats import zips

MAX_PICKLE_BYTES = 256 << 20
MAX_OPCODES = 4_000_000
MAX_DEPTH = 32  # nesting of dicts and lists the flattening follows (a memo can build cycles)
# values the flattening visits: the memo can make a small pickle a DAG with exponentially many
# paths (a list holding one list twice, 32 levels deep)
MAX_VISITS = 1 << 22

# torch's typed storage classes, as torch.save names them, and the safetensors dtype names
_STORAGES = {
    "FloatStorage": ("F32", 4),
    "DoubleStorage": ("F64", 8),
    "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1),
    "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
}
_REBUILD_TENSOR = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")}
_REBUILD_PARAMETER = {
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
}


@dataclasses.dataclass(frozen=True)
class TorchTensor:
    name: str  # the state dict's keys joined by "."
    dtype: str  # safetensors dtype name
    shape: tuple[int, ...]
    offset: int  # absolute offset of its first byte in the checkpoint file
    nbytes: int


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    tensors: tuple[TorchTensor, ...]
    problems: tuple[str, ...]  # tensors that could not be placed (strided views, unknown types)


@dataclasses.dataclass(frozen=True)
class _Global:
    module: str
    name: str


@dataclasses.dataclass(frozen=True)
class _Storage:
    dtype: str
    width: int
    key: str
    numel: int


@dataclasses.dataclass(frozen=True)
class _Tensor:
    storage: _Storage | None  # None: a storage this reader does not know
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _Opaque:
    """A value this reader does not model (what an unknown callable would have returned)."""


_OPAQUE = _Opaque()
_MARK = object()


def read(path: str) -> Checkpoint:
    """The tensors of a torch zip checkpoint; FormatError when it is not one."""
    with paths.open_regular(path) as f:
        if os.pread(f.fileno(), 4, 0) != b"PK\x03\x04":
            raise FormatError(
                "a legacy (non-zip) pickle: its tensors are not read without unpickling"
            )
        entries = {e.name: e for e in zips.layout(f)}
        pkl = [
            e for e in entries.values() if e.name.endswith("data.pkl") and e.name.count("/") == 1
        ]
        if len(pkl) != 1:
            raise FormatError("not a torch zip checkpoint: no single `<archive>/data.pkl`")
        (entry,) = pkl
        archive = entry.name.split("/", 1)[0]
        if entry.method != 0 or entry.size > MAX_PICKLE_BYTES:
            raise FormatError("data.pkl is compressed or over 256 MiB: not read")
        order = entries.get(f"{archive}/byteorder")
        if order is not None and os.pread(f.fileno(), 8, order.data)[: order.size] != b"little":
            raise FormatError("a big-endian checkpoint: its tensors are not read")
        data = os.pread(f.fileno(), entry.size, entry.data)
    if len(data) != entry.size:
        raise FormatError("data.pkl ends early")
    root = _evaluate(data)
    out: list[TorchTensor] = []
    problems: list[str] = []
    for name, t in _flatten(root, "", 0, [MAX_VISITS]):
        placed = _place(name, t, entries, archive)
        if isinstance(placed, str):
            problems.append(placed)
        else:
            out.append(placed)
    return Checkpoint(tuple(out), tuple(problems))


def _place(
    name: str, t: _Tensor, entries: dict[str, zips.Entry], archive: str
) -> TorchTensor | str:
    s = t.storage
    if s is None:
        return f"tensor {name}: a storage type this reader does not know"
    entry = entries.get(f"{archive}/data/{s.key}")
    if entry is None or entry.method != 0:
        return f"tensor {name}: storage {s.key} is missing or compressed"
    count = math.prod(t.shape)
    contiguous, step = True, 1
    for dim, stride in zip(reversed(t.shape), reversed(t.stride), strict=True):
        if dim != 1 and stride != step:
            contiguous = False
        step *= dim
    if not contiguous:
        return f"tensor {name}: a strided view of its storage, not read"
    begin, nbytes = t.offset * s.width, count * s.width
    if t.offset < 0 or begin + nbytes > min(entry.size, s.numel * s.width):
        return f"tensor {name}: runs past the end of storage {s.key}"
    return TorchTensor(name, s.dtype, t.shape, entry.data + begin, nbytes)


def _evaluate(data: bytes) -> Any:
    """The object data.pkl describes, built from plain values and the records above."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for n, (op, arg, _pos) in enumerate(pickletools.genops(data)):
            if n >= MAX_OPCODES:
                raise FormatError(f"data.pkl: more than {MAX_OPCODES} opcodes")
            name = op.name
            if name == "STOP":
                return stack.pop()
            _step(name, arg, stack, memo)
    except (ValueError, IndexError, KeyError, TypeError) as e:
        raise FormatError(f"data.pkl: not a pickle this reader follows ({e})") from None
    raise FormatError("data.pkl: no STOP")


def _pop_mark(stack: list[Any]) -> list[Any]:
    at = len(stack) - 1 - stack[::-1].index(_MARK)
    items = stack[at + 1 :]
    del stack[at:]
    return items


def _step(name: str, arg: Any, stack: list[Any], memo: dict[int, Any]) -> None:
    """One opcode, as the unpickler would apply it to the stack (see pickletools' table)."""
    if name in ("PROTO", "FRAME"):
        return
    if name == "MARK":
        stack.append(_MARK)
    elif name in ("EMPTY_DICT", "DICT"):
        items = _pop_mark(stack) if name == "DICT" else []
        stack.append({})
        _setitems(stack[-1], items)
    elif name in ("EMPTY_LIST", "LIST"):
        stack.append(_pop_mark(stack) if name == "LIST" else [])
    elif name == "EMPTY_TUPLE":
        stack.append(())
    elif name == "TUPLE":
        stack.append(tuple(_pop_mark(stack)))
    elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        k = int(name[-1])
        if len(stack) < k or _MARK in stack[-k:]:
            raise IndexError(f"{name} on a short stack")
        top = tuple(stack[-k:])
        del stack[-k:]
        stack.append(top)
    elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
        stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
    elif name in _VALUES:
        stack.append(arg)
    elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
        memo[int(arg)] = stack[-1]
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif name in ("BINGET", "LONG_BINGET", "GET"):
        stack.append(memo[int(arg)])
    elif name == "GLOBAL":
        module, _, attr = str(arg).partition(" ")
        stack.append(_Global(module, attr))
    elif name == "STACK_GLOBAL":
        attr, module = stack.pop(), stack.pop()
        stack.append(_Global(str(module), str(attr)))
    elif name in ("BINPERSID", "PERSID"):
        pid = stack.pop() if name == "BINPERSID" else arg
        stack.append(_storage(pid))
    elif name == "REDUCE":
        args = stack.pop()
        stack.append(_call(stack.pop(), args))
    elif name in ("NEWOBJ", "NEWOBJ_EX"):
        del stack[-(3 if name == "NEWOBJ_EX" else 2) :]
        stack.append(_OPAQUE)
    elif name == "BUILD":
        stack.pop()  # the state set on an object (an OrderedDict's _metadata): not needed
    elif name == "SETITEM":
        value, key = stack.pop(), stack.pop()
        _setitems(stack[-1], [key, value])
    elif name == "SETITEMS":
        items = _pop_mark(stack)
        _setitems(stack[-1], items)
    elif name == "APPEND":
        value = stack.pop()
        if isinstance(stack[-1], list):
            stack[-1].append(value)
    elif name == "APPENDS":
        items = _pop_mark(stack)
        if isinstance(stack[-1], list):
            stack[-1].extend(items)
    elif name == "POP":
        stack.pop()
    elif name == "POP_MARK":
        _pop_mark(stack)
    elif name == "DUP":
        stack.append(stack[-1])
    elif name == "ADDITEMS":  # into the set below the mark: sets hold no tensors
        _pop_mark(stack)
    elif name in ("EMPTY_SET", "FROZENSET", "OBJ", "INST"):
        if name != "EMPTY_SET":
            _pop_mark(stack)
        stack.append(_OPAQUE)
    else:
        raise FormatError(f"data.pkl: opcode {name} is not one torch.save writes")


# opcodes that push their argument (numbers, text, bytes)
_VALUES = frozenset(
    [
        "BININT",
        "BININT1",
        "BININT2",
        "INT",
        "LONG",
        "LONG1",
        "LONG4",
        "BINFLOAT",
        "FLOAT",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
        "UNICODE",
        "BINSTRING",
        "SHORT_BINSTRING",
        "STRING",
        "BINBYTES",
        "SHORT_BINBYTES",
        "BINBYTES8",
        "BYTEARRAY8",
    ]
)


def _setitems(target: Any, items: list[Any]) -> None:
    if not isinstance(target, dict):
        return
    for key, value in zip(items[0::2], items[1::2], strict=False):
        if isinstance(key, str | int):
            target[key] = value


def _storage(pid: Any) -> Any:
    """A storage from torch's persistent id ('storage', type, key, location, numel)."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        return _OPAQUE
    kind, key, numel = pid[1], pid[2], pid[4]
    if not (isinstance(kind, _Global) and kind.module == "torch" and kind.name in _STORAGES):
        return None
    if not isinstance(numel, int) or numel < 0:
        return _OPAQUE
    dtype, width = _STORAGES[kind.name]
    return _Storage(dtype, width, str(key), numel)


def _call(func: Any, args: Any) -> Any:
    """What a REDUCE of one of torch.save's callables yields; anything else is opaque."""
    if not isinstance(func, _Global) or not isinstance(args, tuple):
        return _OPAQUE
    where = (func.module, func.name)
    if where in _REBUILD_TENSOR and len(args) >= 4:
        storage, offset, shape, stride = args[:4]
        dims = (shape, stride)
        if not all(isinstance(d, tuple) and all(isinstance(x, int) for x in d) for d in dims):
            return _OPAQUE
        if len(shape) != len(stride) or not isinstance(offset, int) or min(shape, default=0) < 0:
            return _OPAQUE
        known = storage if isinstance(storage, _Storage) else None
        return _Tensor(known, offset, shape, stride)
    if where in _REBUILD_PARAMETER and args:
        return args[0]
    if where == ("collections", "OrderedDict"):
        return {}
    return _OPAQUE


def _flatten(obj: Any, prefix: str, depth: int, budget: list[int]) -> list[tuple[str, _Tensor]]:
    """(name, tensor) for every tensor in nested dicts, lists and tuples, names joined by "."."""
    budget[0] -= 1
    if budget[0] < 0:
        raise FormatError(f"data.pkl: over {MAX_VISITS} values to visit (shared references)")
    if isinstance(obj, _Tensor):
        return [(prefix, obj)]
    if depth >= MAX_DEPTH:
        return []
    if isinstance(obj, dict):
        pairs = list(obj.items())
    elif isinstance(obj, list | tuple):
        pairs = list(enumerate(obj))
    else:
        return []
    out: list[tuple[str, _Tensor]] = []
    for key, value in pairs:
        out += _flatten(value, f"{prefix}.{key}" if prefix else str(key), depth + 1, budget)
    return out
