"""A differential oracle for hostile files: what really runs under the real loaders vs the gate.

- `candidates(markers)`: files of every class a loader could execute (pickles of every protocol
  with and without magic, hand-made opcode streams, polyglots, zip and tar variants, legacy
  torch checkpoints, .npy/.npz headers, joblib's compressed pickles), each carrying a payload
  that creates its own marker file when it runs; `mutate` derives more (fuzz/oracle.py).
- `executed(files)`: loads each file with `pickle.load`, `torch.load(weights_only=False)`,
  `numpy.load(allow_pickle=True)` (every member of an .npz) and `joblib.load`, each in a
  throwaway process forked from a harness that imported them once, and reports which loaders
  created the marker. Nothing here is ever loaded in the test process itself.
- `gate_refuses(path)`: the gate's verdict on the file declared in a repository whose policy
  allows every format, and on the file lying ignored in a repository; both must be errors.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import random
import struct
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

LOADERS = ("pickle.load", "torch.load", "numpy.load", "joblib.load")
PERMISSIVE = "[safetensors, gguf, pickle, numpy, onnx, hdf5, tflite, msgpack, other]"


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str  # file name in the repository
    family: str
    data: bytes
    marker: str  # created by the payload when it runs


class Call:
    """Unpickling an instance calls fn(*args): the attack."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


def payloads(marker: str) -> dict[str, Call]:
    import builtins
    import subprocess as sp

    touch = f"open({marker!r}, 'w').close()"
    return {
        "os.system": Call(os.system, f"touch {marker}"),
        "exec": Call(builtins.exec, touch),
        "eval": Call(builtins.eval, touch),
        "subprocess": Call(sp.call, ["touch", marker]),
    }


def _p0(marker: str) -> bytes:
    """A protocol-0 opcode stream that calls os.system (no magic number)."""
    return f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()


def safetensors_polyglot(payload: bytes) -> bytes:
    """A valid safetensors file that pickle.load reads as `payload`: the header length's low
    bytes are `S"` (a STRING opcode whose quoted line is the header up to a newline the JSON
    allows after a string), `}}` close the header and push two dicts, and the only tensor's
    data is the payload."""
    n = 0x2253  # little-endian: b'S"'
    p = len(payload)
    head = f'{{"t":{{"dtype":"U8","shape":[{p}],"data_offsets":[0,{p}]}},"__metadata__":{{"k":"'
    tail = '"\n}}'
    fill = n - len(head) - len(tail)
    header = (head + "a" * fill + tail).encode()
    assert len(header) == n
    return struct.pack("<Q", n) + header + payload


def tar_file(members: list[tuple[str | bytes, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name if isinstance(name, str) else name.decode("latin-1"))
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_name_polyglot(payload: bytes) -> bytes:
    """A tar whose first member's name field (byte 0) is a pickle: pickle.load runs it. The
    field holds 100 bytes: a longer payload would be cut by the mode field and run nothing."""
    if len(payload) > 100:
        raise ValueError(f"a {len(payload)}-byte payload does not fit a tar name field (100)")
    block = bytearray(512)
    block[: len(payload)] = payload
    block[100:108] = b"0000644\0"
    block[108:116] = block[116:124] = b"0000000\0"
    block[124:136] = b"00000000000\0"
    block[136:148] = b"00000000000\0"
    block[156:157] = b"0"
    block[257:263] = b"ustar\0"
    block[263:265] = b"00"
    block[148:156] = b"        "
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block) + b"\0" * 1024


def _torch_zip(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def npy_file(descr: str, payload: bytes) -> bytes:
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': (1,), }}"
    header += " " * ((-len(header) - 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries:
            z.writestr(name, data)
    return buf.getvalue()


def candidates(markers: Path) -> Iterator[Candidate]:
    """The fixed families; every file's payload creates markers/<its number>."""
    import numpy as np

    counter = iter(range(10**9))

    def mk(name: str, family: str, make: Callable[[str], bytes]) -> Candidate:
        marker = str(markers / f"m{next(counter)}")
        return Candidate(name, family, make(marker), marker)

    for proto in range(6):
        for key in ("os.system", "exec", "eval", "subprocess"):
            for name in ("model.bin", "weights.dat"):
                yield mk(name, f"pickle p{proto} {key}",
                         lambda m, p=proto, k=key: pickle.dumps(payloads(m)[k], protocol=p))  # fmt: skip
    stream_families: dict[str, Callable[[str], bytes]] = {
        "INST opcode": lambda m: f"(S'touch {m}'\nios\nsystem\n.".encode(),
        "OBJ opcode": lambda m: f"(cos\nsystem\nS'touch {m}'\no.".encode(),
        "STACK_GLOBAL via memo": lambda m: (
            b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94" + b"00" + b"h\x00h\x01\x93"
            + b"\x8c" + bytes([len(f"touch {m}")]) + f"touch {m}".encode() + b"\x85R."
        ),
        "hex INT before the call": lambda m: b"I0x10\n0" + _p0(m),
        "octal INT before the call": lambda m: b"I010\n0" + _p0(m),
        "long STRING before the call": lambda m: b"S'" + b"a" * 70_000 + b"'\n0" + _p0(m),
        "call then garbage": lambda m: _p0(m)[:-1] + b"\xff\xfe garbage",
        "pickle then trailing bytes": lambda m: pickle.dumps(payloads(m)["exec"], 2) + b"tail",
        "DUP and POP_MARK noise": lambda m: b"(N2001" + _p0(m),
        "protocol 1 binary": lambda m: pickle.dumps(payloads(m)["os.system"], protocol=1),
    }  # fmt: skip
    for family, make in stream_families.items():
        for name in ("model.pt", "tokenizer.model", "notes.txt"):
            yield mk(name, family, make)
    for name in ("model.safetensors", "pytorch_model.bin", "weights.dat"):
        yield mk(name, "polyglot safetensors+pickle", lambda m: safetensors_polyglot(_p0(m)))
    # the marker relative to the loaders' working folder (markers' parent, see executed): an
    # absolute temporary path can overflow the tar name field
    yield mk("archive.tar", "polyglot tar+pickle",
             lambda m: tar_name_polyglot(_p0(os.path.relpath(m, markers.parent))))  # fmt: skip
    yield mk("model.bin", "torch zip", lambda m: _torch_zip({"w": [1], "x": payloads(m)["exec"]}))
    yield mk("model.bin", "torch zip, prepended pickle",
             lambda m: _p0(m) + _torch_zip({"w": [1]}))  # fmt: skip
    yield mk("model.bin", "two archives in one file",
             lambda m: _torch_zip({"w": [1]}) + _torch_zip({"x": payloads(m)["exec"]}))  # fmt: skip
    yield mk("model.bin", "zip, duplicate data.pkl",
             lambda m: dup_zip(pickle.dumps({"w": 1}, 2), pickle.dumps(payloads(m)["exec"], 2)))  # fmt: skip
    yield mk("single.zip", "single-file zip of a pickle",
             lambda m: _zip([("data", pickle.dumps(payloads(m)["exec"], 0))]))  # fmt: skip
    yield mk("model.tar", "legacy torch tar checkpoint", lambda m: tar_file([
        ("storages", pickle.dumps(0, 2) + pickle.dumps([], 2)), ("tensors", pickle.dumps(0, 2)),
        ("pickle", pickle.dumps(payloads(m)["os.system"], 2))]))  # fmt: skip
    yield mk("model.pt", "legacy torch pickles", lambda m: _legacy(payloads(m)["exec"]))
    for descr in ("'|O'", "'O'", "'object'", "[('a', '|O')]", "'O8'"):
        for name in ("arr.npy", "arr.bin"):
            yield mk(name, f"npy object {descr}",
                     lambda m, d=descr: npy_file(d, pickle.dumps([payloads(m)["exec"]], 2)))  # fmt: skip

    def npz(m: str) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, ok=np.ones(2), bad=np.array([payloads(m)["exec"]], dtype=object))
        return buf.getvalue()

    yield mk("arrays.npz", "npz with an object array", npz)
    for method in ("zlib", "gzip", "bz2", "xz", "lzma"):
        for name in ("model.joblib", "model.pkl.gz", "data.bin"):
            yield mk(
                name, f"joblib {method}", lambda m, c=method: joblib_dump(payloads(m)["exec"], c)
            )


def dup_zip(first: bytes, second: bytes) -> bytes:
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name: the point
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("archive/data.pkl", first)
            z.writestr("archive/data.pkl", second)
    return buf.getvalue()


def _legacy(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"x": obj}, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def joblib_dump(obj: Any, method: str) -> bytes:
    import tempfile

    import joblib

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x")
        joblib.dump(obj, path, compress=(method, 3))
        return Path(path).read_bytes()


def mutate(c: Candidate, rng: random.Random, markers: Path, n: int) -> Candidate:
    """The same payload after random byte edits (flip, insert, delete, truncate, splice)."""
    data = bytearray(c.data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        at = rng.randrange(len(data) + 1) if data else 0
        if op == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[at:at] = bytes([rng.randrange(256)])
        elif op == 2 and data:
            del data[at : at + rng.randint(1, 8)]
        elif op == 3:
            del data[at:]
        else:
            data[at:at] = rng.choice([b"0", b"N", b"(", b".", b"\x80\x02", b"PK\x03\x04"])
    return Candidate(c.name, c.family + " (mutated)", bytes(data), c.marker)


# ------------------------------------------------------------------ the real loaders
_HARNESS = r"""
import json, os, resource, signal, sys, warnings
warnings.simplefilter("ignore")
import pickle, numpy, joblib, torch
torch.set_num_threads(1)

def load(kind, path):
    if kind == "pickle.load":
        with open(path, "rb") as f:
            pickle.load(f)
    elif kind == "torch.load":
        torch.load(path, weights_only=False)
    elif kind == "numpy.load":
        r = numpy.load(path, allow_pickle=True)
        for key in getattr(r, "files", ()):
            r[key]
    else:
        joblib.load(path)

def clear(folder):
    found = os.listdir(folder)
    for name in found:
        os.unlink(os.path.join(folder, name))
    return found

out = {}
late = 0
previous = None
for path, marker in json.loads(sys.stdin.read()):
    folder = os.path.dirname(marker)
    out[path] = []
    for kind in sys.argv[1:]:
        if clear(folder) and previous is not None:  # created after its load was checked
            late += 1
            out[previous[0]].append(previous[1])
        pid = os.fork()
        if pid == 0:
            os.setsid()  # its own process group: whatever it spawns dies with it
            signal.alarm(20)
            # A mutated header can make a loader allocate without bound (seen: 12 GB): cap
            # the address space at what the harness maps already plus 2 GB.
            with open("/proc/self/statm") as statm:
                mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            resource.setrlimit(resource.RLIMIT_AS, (mapped + (2 << 30),) * 2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            try:
                load(kind, path)
            except BaseException:
                pass
            os._exit(0)
        os.waitpid(pid, 0)
        try:
            os.killpg(pid, signal.SIGKILL)  # a payload's orphans (a shell still running)
        except ProcessLookupError:
            pass
        # Any marker, not only this file's: a mutated payload may name another file's marker.
        if clear(folder):
            out[path].append(kind)
        previous = (path, kind)
if clear(folder) and previous is not None:
    late += 1
    out[previous[0]].append(previous[1])
out["late markers"] = late
print(json.dumps(out))
"""


def executed(files: list[tuple[Path, str]], cwd: Path) -> tuple[dict[str, list[str]], int]:
    """({path: loaders under which the file's payload ran}, late markers). Loads run one at a
    time, each in a forked process with its own process group, killed whole when the load
    returns; the markers folder is emptied around every load, so any marker that appears is
    this load's (a mutated payload may create another file's marker), and one found before the
    next load (created late) is the previous load's. Every marker lives in one folder, and cwd
    is its parent: the loaders run there, so a payload may name its marker relative to it."""
    r = subprocess.run(
        [sys.executable, "-c", _HARNESS, *LOADERS],
        input=json.dumps([(str(p), m) for p, m in files]),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=1800,
        check=True,
    )
    result: dict[str, Any] = json.loads(r.stdout.splitlines()[-1])
    late = int(result.pop("late markers"))
    return {p: sorted(set(k)) for p, k in result.items()}, late


# ------------------------------------------------------------------ the gate's side
HEAD = "version: 1\nmodel:\n  name: oracle\n  license: mit\n  origin: scratch\n"


def gate_refuses(root: Path, c: Candidate) -> dict[str, list[str]]:
    """The error rules the gate reports for the file: declared under a policy allowing every
    format (`declared`), under the default policy (`default`), and present but ignored in a
    repository that declares nothing (`ignored`)."""
    import hashlib

    from gate import checks
    from tests.helpers import check_target

    out: dict[str, list[str]] = {}
    sha = hashlib.sha256(c.data).hexdigest()
    declared = (
        f"artifacts:\n  - path: {json.dumps(c.name)}\n    size: {len(c.data)}\n    sha256: {sha}\n"
    )
    setups = {
        "declared": HEAD + declared + f"policy:\n  allowed_formats: {PERMISSIVE}\n",
        "default": HEAD + declared,
        "ignored": HEAD + 'ignore: ["**"]\n',
    }
    for label, manifest in setups.items():
        repo = root / label
        repo.mkdir(parents=True)
        (repo / c.name).write_bytes(c.data)
        (repo / "provenance.yaml").write_text(manifest)
        report = check_target(checks.Target.resolve(str(repo), None), lineage_depth="exact")
        out[label] = sorted(
            f.rule
            for f in report.findings
            if f.severity == "error" and (c.name in f.message or c.name in (f.found or ""))
        )
    return out
