"""The bounded ONNX reader (gate/formats/onnx.py) against the `onnx` package, and ONNX as a
first-class format: digests equal to safetensors', external data kept beside the model and
verified, custom operators said, hostile structures refused with a located error."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate import checks, hashing, init_lock
from gate.errors import FormatError
from gate.formats import onnx as gate_onnx
from tests.helpers import HEAD, artifact_yaml, check, errors, manifest, rules_of, write_st

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": rng.standard_normal((16, 8)).astype(np.float32),
        "fc1.bias": rng.standard_normal(16).astype(np.float32),
        "fc2.weight": rng.standard_normal((4, 16)).astype(np.float16),
    }


def _model(weights: dict[str, np.ndarray], **extra: Any) -> Any:
    """A small graph: Gemm / Relu / Gemm over raw_data initializers, plus what `extra` adds."""
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Cast", ["r"], ["r16"], to=TensorProto.FLOAT16),
        helper.make_node("MatMul", ["r16", "fc2.t"], ["y"]),
    ]
    nodes += extra.get("nodes", [])
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    inits += extra.get("inits", [])
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4])],
        initializer=inits,
        sparse_initializer=extra.get("sparse", []),
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), *extra.get("opsets", [])],
        functions=extra.get("functions", []),
        producer_name="tests",
    )


def _save(model: Any, path: Path, **kw: Any) -> Path:
    onnx.save_model(model, str(path), **kw)
    return path


def _read(path: Path) -> gate_onnx.OnnxHeader:
    return gate_onnx.read(str(path))


def _oracle(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every initializer as onnx.load sees it: name -> (onnx type name, dims)."""
    m = onnx.load(str(path), load_external_data=False)
    out = {}
    for t in m.graph.initializer:
        out[t.name] = (TensorProto.DataType.Name(t.data_type), tuple(t.dims))
    return out


ONNX_NAMES = {
    "F32": "FLOAT",
    "U8": "UINT8",
    "I8": "INT8",
    "U16": "UINT16",
    "I16": "INT16",
    "I32": "INT32",
    "I64": "INT64",
    "BOOL": "BOOL",
    "F16": "FLOAT16",
    "F64": "DOUBLE",
    "U32": "UINT32",
    "U64": "UINT64",
    "C64": "COMPLEX64",
    "C128": "COMPLEX128",
    "BF16": "BFLOAT16",
    "F8_E4M3": "FLOAT8E4M3FN",
    "F8_E4M3FNUZ": "FLOAT8E4M3FNUZ",
    "F8_E5M2": "FLOAT8E5M2",
    "F8_E5M2FNUZ": "FLOAT8E5M2FNUZ",
    "U4": "UINT4",
    "I4": "INT4",
    "F4": "FLOAT4E2M1",
    "F8_E8M0": "FLOAT8E8M0",
    "U2": "UINT2",
    "I2": "INT2",
    "F6_E2M3": "FLOAT6E2M3",
    "F6_E3M2": "FLOAT6E3M2",
}


def test_the_type_table_is_onnx_s() -> None:
    for code, (name, _) in gate_onnx.DTYPES.items():
        assert TensorProto.DataType.Name(code) == ONNX_NAMES[name]
    known = {v for k, v in TensorProto.DataType.items() if k not in ("UNDEFINED", "STRING")}
    assert known == set(gate_onnx.DTYPES)


def test_inline_tensors_agree_with_onnx_load(tmp_path: Path) -> None:
    weights = _weights()
    weights["fc2.t"] = weights.pop("fc2.weight").T.copy()
    path = _save(_model(weights), tmp_path / "m.onnx")
    header = _read(path)
    data = path.read_bytes()
    oracle = _oracle(path)
    assert {t.name for t in header.tensors} == set(oracle)
    for t in header.tensors:
        assert (ONNX_NAMES[t.dtype], t.shape) == oracle[t.name]
        assert t.begin is not None and t.end is not None
        assert data[t.begin : t.end] == weights[t.name].tobytes()  # the raw bytes, located
    assert header.ir_version == onnx.load(str(path)).ir_version
    assert header.opsets == (("", 17),) and header.producer == "tests"
    assert header.domains == {"": 4} and header.custom_domains == [] and header.nodes == 4


def test_external_data_is_located_not_read(tmp_path: Path) -> None:
    weights = _weights()
    weights["fc2.t"] = weights.pop("fc2.weight").T.copy()
    path = _save(
        _model(weights),
        tmp_path / "m.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="m.onnx_data",
        size_threshold=0,
    )
    header = _read(path)
    blob = (tmp_path / "m.onnx_data").read_bytes()
    assert header.external_files == ["m.onnx_data"]
    for t in header.tensors:
        assert t.begin is None and t.external is not None
        ext = t.external
        assert ext.length is not None
        assert blob[ext.offset : ext.offset + ext.length] == weights[t.name].tobytes()


def test_typed_fields_constants_subgraphs_sparse_and_functions(tmp_path: Path) -> None:
    typed = helper.make_tensor("typed", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])  # float_data
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 4])  # int64_data varints
    const = helper.make_node(
        "Constant",
        [],
        ["c"],
        value=numpy_helper.from_array(np.arange(6, dtype=np.float32), "ignored"),
    )
    then_g = helper.make_graph(
        [helper.make_node("Identity", ["inner"], ["o"])],
        "then",
        [],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2])],
        initializer=[numpy_helper.from_array(np.ones(2, np.float32) * 7, "inner")],
    )
    cond = helper.make_node("If", ["cond"], ["z"], then_branch=then_g, else_branch=then_g)
    custom = helper.make_node("Frobnicate", ["x"], ["q"], domain="com.example")
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([5.0, 6.0], np.float32), "sp"),
        numpy_helper.from_array(np.array([1, 3], np.int64), "sp_idx"),
        [4],
    )
    fn = helper.make_function("com.example", "Twice", ["a"], ["b"], [], [], [])
    weights = _weights()
    weights["fc2.t"] = weights.pop("fc2.weight").T.copy()
    model = _model(
        weights,
        nodes=[const, cond, custom],
        inits=[typed, shape],
        sparse=[sparse],
        opsets=[helper.make_opsetid("com.example", 1)],
        functions=[fn],
    )
    header = _read(_save(model, tmp_path / "m.onnx"))
    by_name = {t.name: t for t in header.tensors}
    assert by_name["typed"].begin is not None  # little-endian floats: the raw bytes
    assert by_name["shape"].encoded and by_name["shape"].begin is None  # varints
    assert by_name["c"].shape == (6,) and by_name["c"].begin is not None  # Constant output
    assert by_name["inner"].dtype == "F32"  # a subgraph's initializer (both branches)
    assert {"sp", "sp_idx"} <= set(by_name)  # a sparse initializer: values and indices
    assert header.custom_domains == ["com.example"] and header.domains["com.example"] == 1
    assert header.functions == ("com.example:Twice",)
    plan = gate_onnx.plan(header)
    begins = [r.begin for r in plan.regions]
    assert begins == sorted(begins) and all(r.end > r.begin for r in plan.regions)


def test_onnx_digests_equal_safetensors_digests(tmp_path: Path) -> None:
    weights = _weights()
    weights["fc2.t"] = weights.pop("fc2.weight").T.copy()
    path = _save(_model(weights), tmp_path / "m.onnx")
    write_st(tmp_path / "m.safetensors", weights)
    a = hashing.scan(str(path))
    b = hashing.scan(str(tmp_path / "m.safetensors"))
    assert a.format == "onnx" and a.header_error is None and a.tensors and b.tensors
    assert {(t.name, t.digest) for t in a.tensors} == {(t.name, t.digest) for t in b.tensors}
    lazy = hashing.scan(str(path), tensors=False)
    assert lazy.lazy and lazy.header_error is None


def test_external_tensors_get_the_digests_they_would_have_inline(tmp_path: Path) -> None:
    """Tensors in external data are digested from their ranges of the data file: the same
    digests as inline, so `lock`, tensor diffs and the exact tier cover them too."""
    weights = _weights()
    weights["fc2.t"] = weights.pop("fc2.weight").T.copy()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    inline = hashing.scan(str(_save(_model(weights), tmp_path / "a" / "m.onnx")))
    external = _save(_model(weights), tmp_path / "b" / "m.onnx", save_as_external_data=True,
                     location="m.onnx_data", size_threshold=0)  # fmt: skip
    scan = hashing.scan(str(external))
    assert scan.depends == ("m.onnx_data",) and scan.tensors is not None
    assert len(scan.tensors) == len(inline.tensors or ()) and scan.tensors_digest is not None
    assert scan.tensors_digest == inline.tensors_digest
    assert hashing.scan(str(external), tensors=False).depends == ("m.onnx_data",)
    (tmp_path / "c").mkdir()  # one file per tensor, as some exporters write them
    apart = _save(_model(weights), tmp_path / "c" / "m.onnx", save_as_external_data=True,
                  all_tensors_to_one_file=False, size_threshold=0)  # fmt: skip
    scan_apart = hashing.scan(str(apart))
    assert len(scan_apart.depends) == len(weights) and scan_apart.tensors is not None
    assert scan_apart.tensors_digest == inline.tensors_digest
    data = tmp_path / "b" / "m.onnx_data"
    data.write_bytes(data.read_bytes()[:-4])  # too short: no partial table
    assert hashing.scan(str(external)).tensors is None
    data.unlink()
    assert hashing.scan(str(external)).tensors is None


def test_a_changed_external_tensor_is_named(tmp_path: Path) -> None:
    """The model file is unchanged when only its external data changes: its declared tensor
    digest is then read again, and the tensor diff names what changed."""
    root = _repo(tmp_path, external=True)
    manifest(root, HEAD + artifact_yaml(root, "model.onnx", "model.onnx_data"))
    init_lock.lock(checks.Target.resolve(str(root), None))
    assert "tensors_digest" in (root / "provenance.yaml").read_text()
    assert errors(check(root)) == []
    model = onnx.load(str(root / "model.onnx"), load_external_data=False)
    (fc1,) = [t for t in model.graph.initializer if t.name == "fc1.weight"]
    offset = int(next(e.value for e in fc1.external_data if e.key == "offset"))
    data = bytearray((root / "model.onnx_data").read_bytes())
    data[offset : offset + 4] = np.float32(42).tobytes()
    (root / "model.onnx_data").write_bytes(bytes(data))
    report = check(root)
    (pg205,) = [f for f in report.findings if f.rule == "PG205"]
    lines = (root / "provenance.yaml").read_text().splitlines()
    assert "tensors_digest" in lines[pg205.location.line - 1]  # the model's declaration
    assert pg205.details == ("changed: fc1.weight (content)",)
    assert "PG204" in rules_of(report)  # the data file's own SHA-256


def test_the_stat_cache_never_answers_for_external_data(tmp_path: Path) -> None:
    """The cache keys on the model file alone: it keeps the scan (and which files it covers)
    but not the digests that read the data file, so a changed data file is read again."""
    from gate.cache import StatCache
    from gate.scanner import Scanner

    weights = _weights()
    (tmp_path / "m").mkdir()
    path = _save(_model(weights), tmp_path / "m" / "m.onnx", save_as_external_data=True,
                 location="m.onnx_data", size_threshold=0)  # fmt: skip
    cache = StatCache(str(tmp_path / "cache"))
    full = Scanner(cache).scan(str(path), tensors=True)
    warm = Scanner(cache)
    hit = warm.scan(str(path))
    assert warm.files_hashed == 0 and hit.lazy and hit.depends == ("m.onnx_data",)
    assert warm.scan(str(path), tensors=True).tensors == full.tensors and warm.files_hashed == 1


# ---------------------------------------------------------------------- the check
def _repo(root: Path, external: bool = False, **kw: Any) -> Path:
    weights = _weights()
    weights["fc2.t"] = weights.pop("fc2.weight").T.copy()
    save = (
        {
            "save_as_external_data": True,
            "all_tensors_to_one_file": True,
            "location": kw.pop("location", "model.onnx_data"),
            "size_threshold": 0,
        }
        if external
        else {}
    )
    _save(_model(weights, **kw), root / "model.onnx", **save)
    return root


def test_init_scaffolds_an_onnx_repository_that_passes_its_own_policy(tmp_path: Path) -> None:
    root = _repo(tmp_path, external=True)
    (root / "extra.msgpack").write_bytes(b"\x81\xa1a\x01")
    (root / "README.md").write_text("---\nlicense: mit\n---\n")
    outcome = init_lock.init(checks.Target.resolve(str(root), None))
    text = (root / "provenance.yaml").read_text()
    assert "allowed_formats: [safetensors, gguf, onnx, msgpack]" in text, text
    assert "model.onnx_data" in text
    report = check(root)
    assert errors(report) == [] and outcome.report.findings == ()
    assert "PG306" in rules_of(report, "note")  # msgpack: not inspected, said
    assert "PG301" not in rules_of(report)


def test_an_executable_format_is_not_added_by_init(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    (root / "model.pt").write_bytes(b"\x80\x02}q\x00.")
    init_lock.init(checks.Target.resolve(str(root), None))
    assert "allowed_formats: [safetensors, gguf, onnx]\n" in (root / "provenance.yaml").read_text()


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("../outside.bin", "`..` leads outside"),
        ("/etc/hostname", "absolute paths"),
        ("link.bin", "symlink resolves outside"),
        ("gone.bin", "no such file"),
    ],
)
def test_external_data_must_stay_beside_the_model(
    tmp_path: Path, location: str, problem: str
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    _repo(root, external=True, location="real.bin")
    blob = (root / "real.bin").read_bytes()
    (tmp_path / "outside.bin").write_bytes(blob)
    os.symlink(tmp_path / "outside.bin", root / "link.bin")
    # point the model at the location under test (same length: edit the serialised string)
    model = onnx.load(str(root / "model.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save_model(model, str(root / "model.onnx"))
    manifest(root, HEAD + artifact_yaml(root, "model.onnx", "real.bin"))
    report = check(root)
    (pg314,) = [f for f in report.findings if f.rule == "PG314"]
    assert problem in pg314.message and pg314.severity == "error"
    assert pg314.location.line == 7  # the model's `path:` line in the manifest


def test_undeclared_or_short_external_data_fails(tmp_path: Path) -> None:
    root = _repo(tmp_path, external=True)
    manifest(root, HEAD + artifact_yaml(root, "model.onnx"))
    (pg314,) = [f for f in check(root).findings if f.rule == "PG314"]
    assert "not a declared artifact" in pg314.message
    manifest(root, HEAD + artifact_yaml(root, "model.onnx", "model.onnx_data"))
    assert errors(check(root)) == []
    data = root / "model.onnx_data"
    data.write_bytes(data.read_bytes()[:-4])
    manifest(root, HEAD + artifact_yaml(root, "model.onnx", "model.onnx_data"))
    (pg314,) = [f for f in check(root).findings if f.rule == "PG314"]
    assert "read past its end" in pg314.message


def test_custom_operators_are_a_note(tmp_path: Path) -> None:
    custom = helper.make_node("Frobnicate", ["x"], ["q"], domain="com.example")
    root = _repo(tmp_path, nodes=[custom], opsets=[helper.make_opsetid("com.example", 1)])
    manifest(root, HEAD + artifact_yaml(root, "model.onnx"))
    report = check(root)
    (pg315,) = [f for f in report.findings if f.rule == "PG315"]
    assert "com.example (1 node(s))" in pg315.message and errors(report) == []


def test_a_malformed_onnx_is_a_located_error(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    data = (root / "model.onnx").read_bytes()
    (root / "model.onnx").write_bytes(data[: len(data) // 2])
    manifest(root, HEAD + artifact_yaml(root, "model.onnx"))
    report = check(root)
    assert "PG313" in errors(report)


# ---------------------------------------------------------------------- hostile structures
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _parse(data: bytes) -> gate_onnx.OnnxHeader:
    return gate_onnx.parse(len(data), lambda at, n: data[at : at + n])


def _tensor(dims: list[int], dtype: int = 1, raw: bytes = b"", name: bytes = b"t") -> bytes:
    body = b"".join(_varint(1 << 3) + _varint(d) for d in dims)
    return body + _varint(2 << 3) + _varint(dtype) + _field(8, name) + _field(9, raw)


IR = _varint(1 << 3) + _varint(9)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"\x08", "varint runs past"),
        (IR, "one graph, this one 0"),
        (_field(7, b""), "no ir_version"),
        (IR + _varint(7 << 3 | 2) + _varint(1000) + b"\0", "declares 1000 bytes"),
        (IR + b"\x0b", "wire type 3"),
        (IR + b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
        (IR + _field(7, _field(5, _tensor([1 << 62, 1 << 62]))), "raw_data of 0 bytes"),
        (IR + _field(7, _field(5, _tensor([2], dtype=99))), "unknown data type 99"),
        (IR + _field(7, _field(5, _tensor([(1 << 64) - 1], raw=b"\0" * 4))), "negative dim"),
        (IR + _field(7, _field(5, _tensor([1], name=b"\xff\xfe", raw=b"\0" * 4))), "UTF-8"),
    ],
)
def test_hostile_structures_end_in_a_format_error(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        _parse(data)


def test_nesting_and_counts_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = _field(5, _tensor([1], raw=b"\0" * 4))
    for _ in range(gate_onnx.MAX_DEPTH):  # graph > node > attribute(g) > graph ...
        graph = _field(1, _field(5, _field(6, graph)))
    with pytest.raises(FormatError, match="nested deeper"):
        _parse(IR + _field(7, graph))
    many = IR + _field(7, _field(5, _tensor([1], raw=b"\0" * 4)) * 50)
    assert len(_parse(many).tensors) == 50
    monkeypatch.setattr(gate_onnx, "MAX_TENSORS", 10)
    with pytest.raises(FormatError, match="more than 10 stored tensors"):
        _parse(many)
    monkeypatch.setattr(gate_onnx, "MAX_TENSORS", 1000)
    monkeypatch.setattr(gate_onnx, "MAX_FIELDS", 100)
    with pytest.raises(FormatError, match="more than 100 protobuf fields"):
        _parse(many)


def test_every_truncation_of_a_real_model_is_refused_cleanly(tmp_path: Path) -> None:
    data = _save(
        _model(_weights() | {"fc2.t": np.zeros((16, 4), np.float16)}), tmp_path / "m.onnx"
    ).read_bytes()
    for cut in range(len(data)):
        try:
            _parse(data[:cut])
        except FormatError:
            continue


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=512))
def test_random_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    try:
        header = _parse(IR + _field(7, data))
    except FormatError:
        return
    gate_onnx.plan(header)  # a parsed header always plans


def test_long_node_metadata_is_skipped_and_name_scopes_are_read(tmp_path: Path) -> None:
    """torch.onnx writes a stack trace per node: kilobytes nobody here reads (a 100 KB one
    would otherwise break the name cap), beside the module scopes the lineage reader uses."""
    weights = _weights()
    weights["fc2.t"] = weights.pop("fc2.weight").T.copy()
    model = _model(weights)
    node = model.graph.node[3]  # the MatMul reading fc2.t
    helper.set_metadata_props(
        node,
        {
            "pkg.torch.onnx.stack_trace": "x" * 100_000,
            "pkg.torch.onnx.name_scopes": "['', 'model', 'model.fc2', 'linear']",
        },
    )
    header = _read(_save(model, tmp_path / "m.onnx"))
    (use,) = header.uses["fc2.t"]
    assert (use.op, use.index, use.scope) == ("MatMul", 1, "model.fc2")


def test_a_warm_check_reads_no_onnx_structure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gate.cache import StatCache
    from gate.scanner import Scanner
    from tests.helpers import check_target

    (tmp_path / "r").mkdir()
    root = _repo(tmp_path / "r", external=True)
    manifest(root, HEAD + artifact_yaml(root, "model.onnx", "model.onnx_data"))
    target = checks.Target.resolve(str(root), None)
    cache = StatCache(str(tmp_path / "cache"))
    assert errors(check_target(target, scanner=Scanner(cache))) == []
    cache.flush()  # as the command line does when it closes the cache
    calls = []
    real_read = gate_onnx.read
    monkeypatch.setattr(gate_onnx, "read", lambda path: calls.append(path) or real_read(path))
    report = check_target(target, scanner=Scanner(cache))
    assert errors(report) == [] and calls == []  # the summary came from the stat cache
    (root / "model.onnx_data").write_bytes((root / "model.onnx_data").read_bytes()[:-4])
    manifest(root, HEAD + artifact_yaml(root, "model.onnx", "model.onnx_data"))
    assert "PG314" in errors(check_target(target, scanner=Scanner(cache)))  # sizes re-checked
