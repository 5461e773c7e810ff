"""Long property-based fuzz run of every parser that reads untrusted bytes.

    python fuzz/fuzz.py [--examples 20000] [--seed 0]

Targets: the safetensors header parser, the GGUF header reader, the ONNX structure reader, the
Git LFS pointer parser, the manifest loader, the static pickle scanner, the strict zip layout
reader, the tar listing, the .npy header reader, every loader interpretation at once on
polyglot-shaped inputs (magic numbers, archives and opcode streams spliced together), reference
packs and pack indexes (a real pack and index.json, mutated), model signatures (a model.sig
bundle, mutated outside and inside its signed payload), and the lineage engine (model
folders of random, possibly truncated, tensors compared with a reference and rendered as
JSON). Whether hostile files really execute under the real loaders is fuzz/oracle.py's
question. Each input must
end in a value or a FormatError / located finding, within a per-input time bound; anything else
is a crash and fails the run.
The unit tests run the same properties with a few hundred examples; this is the long run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import struct
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gate import lfs, manifest  # noqa: E402
from gate.errors import FormatError  # noqa: E402
from gate.formats import gguf, loaders, npy, onnx, safetensors, tars, torch_zip, zips  # noqa: E402
from gate.lineage import onnx_roles  # noqa: E402

PER_INPUT_S = 2.0
PER_INPUT_BYTES = 64 << 20  # peak Python allocation while handling one input


def st_safetensors() -> st.SearchStrategy[bytes]:
    entry = st.fixed_dictionaries(
        {
            "dtype": st.sampled_from([*safetensors.DTYPE_BITS, "X"]),
            "shape": st.lists(st.integers(-1, 2**20), max_size=3),
            "data_offsets": st.lists(st.integers(-1, 2**20), max_size=3),
        }
    )
    header = st.dictionaries(st.text(max_size=8), entry, max_size=6).map(
        lambda h: json.dumps(h).encode()
    )
    return st.one_of(st.binary(max_size=300), header.map(lambda h: h + b" " * (len(h) % 8)))


def st_gguf() -> st.SearchStrategy[bytes]:
    head = st.tuples(st.sampled_from([1, 2, 3]), st.integers(0, 4), st.integers(0, 4)).map(
        lambda t: b"GGUF" + struct.pack("<IQQ", *t)
    )
    return st.tuples(head, st.binary(max_size=600)).map(lambda p: p[0] + p[1])


def st_pointer() -> st.SearchStrategy[bytes]:
    line = st.sampled_from(
        [b"oid sha256:" + b"a" * 64, b"size 12", b"size -1", b"oid x", b"ext-0 y"]
    )
    return st.lists(line, max_size=4).map(
        lambda ls: b"version https://git-lfs.github.com/spec/v1\n" + b"\n".join(ls) + b"\n"
    ) | st.binary(max_size=200)


def st_manifest() -> st.SearchStrategy[bytes]:
    atoms = st.sampled_from(
        [*"abc:-[]{},&*!#|>'\"\n \t019.%@`?", "version: 1\n", "model:\n", "  ", "- ", "<<: ",
         "!!python/object:os.system ", "\xff", "artifacts:\n", "  - path: ../x\n"]
    )  # fmt: skip
    return st.one_of(
        st.lists(atoms, max_size=150).map(lambda x: "".join(x).encode("utf-8", "surrogatepass")),
        st.binary(max_size=300),
    )


def st_pickle() -> st.SearchStrategy[bytes]:
    import pickletools  # noqa: F401  (documents that opcodes, not objects, are generated)

    ops = st.sampled_from(
        [b"\x80\x02", b"\x80\x04", b"c", b"os\nsystem\n", b"\x93", b"\x8c\x02os", b"R", b"(",
         b"t", b".", b"N", b"K\x01", b"X\x02\x00\x00\x00ab", b"q\x00", b"h\x00", b"\x94"]
    )  # fmt: skip
    return st.lists(ops, max_size=40).map(b"".join) | st.binary(max_size=200)


LINEAGE_NAMES = [
    "model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
    "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight",
    "model.layers.1.mlp.down_proj.weight", "x.y.3.z", "blk.0.attn_q.weight", "",
]  # fmt: skip


def st_model() -> st.SearchStrategy[bytes]:
    """A safetensors file of a few random tensors (any bits: NaN and inf included), or its
    truncation."""
    import numpy as np

    tensor = st.tuples(
        st.sampled_from(LINEAGE_NAMES),
        st.sampled_from(["F32", "F16", "BF16"]),
        st.lists(st.integers(1, 40), min_size=1, max_size=2),
        st.integers(0, 2**32 - 1),
    )

    def build(spec: tuple[list[tuple[str, str, list[int], int]], int]) -> bytes:
        tensors, cut = spec
        header: dict[str, object] = {}
        blobs, offset = [], 0
        for name, dtype, shape, bits in tensors:
            if name in header:
                continue
            n = int(np.prod(shape)) * (4 if dtype == "F32" else 2)
            blobs.append(np.random.default_rng(bits).bytes(n))
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
            offset += n
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        data = struct.pack("<Q", len(raw)) + raw + b"".join(blobs)
        return data[:cut] if cut else data

    return st.tuples(st.lists(tensor, max_size=6), st.integers(0, 400)).map(build)


def run_lineage(data: bytes, scratch: Path) -> None:
    from gate.lineage import models, render
    from gate.lineage import relation as relate

    folder = scratch / "candidate"
    folder.mkdir(exist_ok=True)
    (folder / "model.safetensors").write_bytes(data)
    cand = models.open_model(str(folder))
    ref = models.open_model(str(scratch / "reference"))
    try:
        report = relate.compare(cand, [ref])
    finally:
        cand.close()
        ref.close()
    json.loads(render.render(report, "json"))


def make_reference(scratch: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    (scratch / "reference").mkdir(exist_ok=True)
    save_file(
        {n: rng.standard_normal((40, 40)).astype(np.float32) for n in LINEAGE_NAMES[:6]},
        str(scratch / "reference" / "model.safetensors"),
    )
    import scipy.optimize
    import scipy.stats  # noqa: F401

    for scale in (0.0, 0.1, 10.0):  # copy, fine-tune and unrelated paths, once each
        noisy = {n: (rng.standard_normal((40, 40)) * scale).astype(np.float32)
                 for n in LINEAGE_NAMES[:6]}  # fmt: skip
        save_file(noisy, str(scratch / "warm.safetensors"))
        run_lineage((scratch / "warm.safetensors").read_bytes(), scratch)


def _pack_seed(scratch: Path) -> tuple[bytes, bytes]:
    """A real pack (of the fuzz reference model) and the index.json listing it."""
    from gate.lineage import index, pack
    from gate.scanner import Scanner

    out = scratch / f"seed{pack.SUFFIX}"
    pack.fingerprint(str(scratch / "reference"), str(out), scanner=Scanner(), name="seed")
    index.add(str(scratch / "seed-index"), [str(out)])
    return out.read_bytes(), (scratch / "seed-index" / index.INDEX_FILE).read_bytes()


def run_pack(data: bytes, scratch: Path) -> None:
    from gate.lineage import pack

    path = scratch / f"fuzzed{pack.SUFFIX}"
    path.write_bytes(data)
    try:
        got = pack.read(str(path))
    except pack.PackError:
        return
    sample = got.open()  # a pack that reads is usable: its tensors lie inside the file
    try:
        for t in sample.model.tensors.values():
            assert t.offset >= 0
            assert t.offset + t.nbytes <= len(data)
            sample.model.array(t)
    finally:
        sample.model.close()


def run_index(data: bytes, scratch: Path) -> None:
    from gate.lineage import index, pack

    folder = scratch / "fuzzed-index"
    folder.mkdir(exist_ok=True)
    (folder / index.INDEX_FILE).write_bytes(data)
    try:
        got = index.load(str(folder))
    except pack.PackError:
        return
    for e in got.entries:
        assert ".." not in e.file.split("/")
        assert not e.file.startswith("/")
    index.verify(got)  # every listed pack missing or refused: problems, never a crash


def _signature_seed() -> tuple[bytes, bytes]:
    """A model.sig-shaped bundle (files method, two resources) and its signed statement."""
    import base64
    import hashlib

    digests = [hashlib.sha256(n).hexdigest() for n in (b"a", b"b")]
    statement = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [
                {
                    "name": "m",
                    "digest": {
                        "sha256": hashlib.sha256(
                            b"".join(bytes.fromhex(d) for d in digests)
                        ).hexdigest()
                    },
                }
            ],
            "predicateType": "https://model_signing/signature/v1.0",
            "predicate": {
                "serialization": {"method": "files", "hash_type": "sha256", "ignore_paths": []},
                "resources": [
                    {"name": n, "algorithm": "sha256", "digest": d}
                    for n, d in zip(("model.safetensors", "sub/config.json"), digests, strict=True)
                ],
            },
        }
    ).encode()
    return _signature_bundle(base64.b64encode(statement)), statement


def _signature_bundle(payload: bytes) -> bytes:
    envelope = {
        "payloadType": "application/vnd.in-toto+json",
        "payload": payload.decode("latin-1"),
        "signatures": [{"sig": "AA=="}],
    }
    doc = {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "dsseEnvelope": envelope}
    return json.dumps(doc).encode()


def run_signature(data: bytes) -> None:
    from gate import signature

    try:
        got = signature.parse(data)
    except signature.SignatureError:
        return
    for r in got.resources:  # a signature that reads names only paths inside the repository
        assert not r.path.startswith("/"), r.path
        assert ".." not in r.path.split("/"), r.path
        assert len(r.digest) == signature.HASHES[r.algorithm]


def run_safetensors(data: bytes) -> None:
    try:
        n = safetensors.header_length(data[:8], len(data) + 8)
        safetensors.parse_header(data[:n] if n <= len(data) else data, len(data) + 8)
    except FormatError:
        pass


def run_gguf(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        gguf.parse_header(data, len(data))


def run_pointer(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        lfs.parse(data)


def run_manifest(data: bytes) -> None:
    parsed, findings = manifest.parse(data, "p.yaml")
    assert (parsed is None) == bool(findings)


def run_pickle(data: bytes, scratch: Path) -> None:
    path = scratch / "p.pkl"
    path.write_bytes(data)
    result = loaders.scan(str(path), "p.pkl")
    assert result.ok or result.refused or result.error


def _zip_seed() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/data/0", b"\0" * 16)
    return buf.getvalue()


def _tar_seed() -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in ("storages", "x.pkl"):
            info = tarfile.TarInfo(name)
            info.size = 5
            t.addfile(info, io.BytesIO(b"N.\0\0\0"))
    return buf.getvalue()


def _onnx_seed() -> bytes:
    """A small ONNX model: initializers inline and in typed fields, a Constant, a subgraph."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "w")
    typed = helper.make_tensor("typed", TensorProto.FLOAT, [2], [1.0, 2.0])
    inner = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["o"])],
        "inner",
        [],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, [3, 4])],
    )
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones(3, "f"))),
        helper.make_node("If", ["cond"], ["z"], then_branch=inner, else_branch=inner),
        helper.make_node("MatMul", ["x", "w"], ["y"], domain="com.example"),
    ]
    graph = helper.make_graph(nodes, "g", [], [], initializer=[w, typed])
    return helper.make_model(graph).SerializeToString()  # type: ignore[no-any-return]


def run_onnx(data: bytes) -> None:
    try:
        header = onnx.parse(len(data), lambda at, n: data[at : at + n])
    except FormatError:
        return
    plan = onnx.plan(header)
    assert all(0 <= r.begin <= r.end <= len(data) for r in plan.regions)
    roles = onnx_roles.roles(header.graph, {t.name: t.shape for t in header.tensors})
    assert set(roles) <= {t.name for t in header.tensors}


def _torch_seed() -> bytes:
    """A torch zip as torch.save writes one: {"w": a 2x3 float tensor} and its storage."""
    import io
    import zipfile

    def text(s: str) -> bytes:
        return b"X" + struct.pack("<I", len(s)) + s.encode()

    pid = b"(" + text("storage") + b"ctorch\nFloatStorage\n" + text("0") + text("cpu")
    pid += b"K\x06tQ"
    args = b"(" + pid + b"K\x00K\x02K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)Rt"
    pickled = b"\x80\x02}(" + text("w") + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"Ru."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", b"\0" * 24)
    return buf.getvalue()


def run_torch_zip(data: bytes, scratch: Path) -> None:
    path = scratch / "t.pt"
    path.write_bytes(data)
    try:
        ckpt = torch_zip.read(str(path))
    except FormatError:
        return
    assert all(t.offset >= 0 and t.offset + t.nbytes <= len(data) for t in ckpt.tensors)


def st_mutated(seed_bytes: bytes) -> st.SearchStrategy[bytes]:
    """A valid seed file after a few byte edits: most inputs get past the first checks."""
    edit = st.tuples(st.integers(0, len(seed_bytes)), st.integers(0, 255), st.sampled_from("fid"))

    def apply(edits: list[tuple[int, int, str]]) -> bytes:
        data = bytearray(seed_bytes)
        for at, value, op in edits:
            at = min(at, len(data))
            if op == "f" and at < len(data):
                data[at] = value
            elif op == "i":
                data[at:at] = bytes([value])
            else:
                del data[at : at + 1 + value % 8]
        return bytes(data)

    return st.lists(edit, max_size=6).map(apply)


def st_npy() -> st.SearchStrategy[bytes]:
    descr = st.sampled_from(["'<f4'", "'|O'", "[('a', '<f4'), ('b', 'O')]", "'object'", "1", "[",
                             "(('x', 'f4'), (2,))", "'" + "a" * 300 + "'"])  # fmt: skip
    header = st.tuples(descr, st.booleans(), st.sampled_from(["(1,)", "()", "(2, 3)", "x"])).map(
        lambda t: f"{{'descr': {t[0]}, 'fortran_order': {t[1]}, 'shape': {t[2]}}}".encode()
    )
    version = st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x00"])
    return st.tuples(version, header, st.binary(max_size=64)).map(
        lambda t: b"\x93NUMPY" + t[0] + struct.pack("<H" if t[0][0] == 1 else "<I", len(t[1]))
        + t[1] + t[2]
    )  # fmt: skip


def st_polyglot() -> st.SearchStrategy[bytes]:
    parts = st.sampled_from(
        [b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY\x01\x00", b"GGUF", b"\x1f\x8b", b"BZh9",
         b"\xfd7zXZ\x00", b"x\x9c", b"ZF", b"\x80\x02", b"cos\nsystem\n", b"(S'x'\ntR.", b"S\"",
         b'{"a":{}}\n}}', b"ustar\x00", b"\x00" * 8, _zip_seed(), _tar_seed()]
    )  # fmt: skip
    return st.lists(st.one_of(parts, st.binary(max_size=32)), max_size=8).map(b"".join)


def run_zip(data: bytes) -> None:
    import io

    with contextlib.suppress(FormatError):
        zips.layout(io.BytesIO(data))


def run_tar(data: bytes) -> None:
    import io

    with contextlib.suppress(FormatError):
        tars.members(io.BytesIO(data))


def run_npy(data: bytes) -> None:
    import io

    with contextlib.suppress(FormatError):
        _, descr = npy.header(io.BytesIO(data))
        npy.has_objects(descr)


def run_loaders(data: bytes) -> None:
    import io

    result = loaders.scan_stream(io.BytesIO(data), len(data), named=True)
    assert not result.executable or result.pickle


def fuzz(
    name: str, strategy: st.SearchStrategy[bytes], target: Callable[[bytes], None], n: int, rng: int
) -> dict[str, object]:
    stats = {"target": name, "inputs": 0, "crashes": 0, "slowest_s": 0.0, "peak_mb": 0.0}

    @seed(rng)
    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(strategy)
    def prop(data: bytes) -> None:
        stats["inputs"] = int(stats["inputs"]) + 1
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]  # hypothesis's own bookkeeping grows
        t = time.perf_counter()
        target(data)
        took = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1] - baseline
        stats["slowest_s"] = max(float(stats["slowest_s"]), took)
        stats["peak_mb"] = max(float(stats["peak_mb"]), peak / 2**20)
        assert took < PER_INPUT_S, f"{took:.2f}s for one input"
        assert peak < PER_INPUT_BYTES, f"{peak} bytes allocated for one input"

    t = time.perf_counter()
    tracemalloc.start()
    try:
        prop()
    except Exception as e:  # hypothesis re-raises the minimal failing example
        stats["crashes"] = 1
        stats["failure"] = f"{type(e).__name__}: {e}"[:500]
    finally:
        tracemalloc.stop()
    stats["seconds"] = round(time.perf_counter() - t, 1)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="run one target (its name, e.g. 'pickle scanner')")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        targets: list[tuple[str, st.SearchStrategy[bytes], Callable[[bytes], None]]] = [
            ("safetensors header", st_safetensors(), run_safetensors),
            ("gguf header", st_gguf(), run_gguf),
            ("lfs pointer", st_pointer(), run_pointer),
            ("manifest loader", st_manifest(), run_manifest),
            ("pickle scanner", st_pickle(), lambda d: run_pickle(d, Path(scratch))),
            ("zip layout", st_mutated(_zip_seed()), run_zip),
            ("tar listing", st_mutated(_tar_seed()), run_tar),
            ("npy header", st_npy(), run_npy),
            ("onnx structure", st_mutated(_onnx_seed()), run_onnx),
            (
                "torch zip tensor table",
                st_mutated(_torch_seed()),
                lambda d: run_torch_zip(d, Path(scratch)),
            ),
            ("every loader (polyglots)", st_polyglot(), run_loaders),
            ("lineage engine", st_model(), lambda d: run_lineage(d, Path(scratch))),
        ]
        make_reference(Path(scratch))
        seed_pack, seed_index = _pack_seed(Path(scratch))
        targets += [
            ("reference pack", st_mutated(seed_pack), lambda d: run_pack(d, Path(scratch))),
            ("pack index", st_mutated(seed_index), lambda d: run_index(d, Path(scratch))),
        ]
        import base64

        bundle, statement = _signature_seed()
        signed = st_mutated(statement).map(lambda d: _signature_bundle(base64.b64encode(d)))
        targets += [
            ("model signature", st.one_of(st_mutated(bundle), signed), run_signature),
        ]
        chosen = [t for t in targets if args.only in (None, t[0])]
        results = [fuzz(name, s, t, args.examples, args.seed) for name, s, t in chosen]
    for r in results:
        print(json.dumps(r))
    total = sum(int(r["inputs"]) for r in results)
    crashes = sum(int(r["crashes"]) for r in results)
    print(f"{total} inputs, {crashes} crash(es)")
    sys.exit(1 if crashes else 0)


if __name__ == "__main__":
    main()
