"""Core ML packages and TensorFlow SavedModels are recognised: a Core ML `weight.bin` is a MIL
blob file, not a pickle (it was refused as one), unless its bytes are a pickle; SavedModel
checkpoint shards, which have no suffix of their own, are weight files."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

from gate import checks, init_lock
from gate.formats import sniff
from tests.helpers import HEAD, artifact_yaml, check, errors, manifest, rules_of

WEIGHTS = "m.mlpackage/Data/com.apple.CoreML/weights/weight.bin"


def mlpackage(root: Path, blob: bytes | None = None) -> Path:
    data = root / "m.mlpackage" / "Data" / "com.apple.CoreML"
    (data / "weights").mkdir(parents=True)
    header = struct.pack("<II", 1, 2) + bytes(56)  # blob count, storage version 2
    meta = struct.pack("<IIQQ", 0xDEADBEEF, 1, 64, 128) + bytes(40)  # sentinel, type, size, at
    (data / "weights" / "weight.bin").write_bytes(blob or header + meta + os.urandom(64))
    (data / "model.mlmodel").write_bytes(b"\x08\x08\x12\x04spec" + os.urandom(32))
    (root / "m.mlpackage" / "Manifest.json").write_text('{"fileFormatVersion": "1.0.0"}')
    return root


def test_a_core_ml_package_is_core_ml(tmp_path: Path) -> None:
    root = mlpackage(tmp_path)
    (root / "README.md").write_text("---\nlicense: mit\n---\n")
    init_lock.init(checks.Target.resolve(str(root), None))
    assert (
        "allowed_formats: [safetensors, gguf, onnx, coreml]"
        in (root / "provenance.yaml").read_text()
    )
    report = check(root)
    assert errors(report) == [] and "PG306" in rules_of(report, "note")
    assert {a.format for a in report.artifacts} == {"coreml"}


def test_a_pickle_inside_a_core_ml_package_is_still_a_pickle(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("true",))

    for protocol in (0, 2):
        root = tmp_path / f"p{protocol}"
        root.mkdir()
        mlpackage(root, pickle.dumps(Evil(), protocol=protocol))
        rels = (WEIGHTS, "m.mlpackage/Data/com.apple.CoreML/model.mlmodel")
        manifest(root, HEAD + artifact_yaml(root, *rels) + "policy:\n  allowed_formats: [coreml]\n")
        assert "PG302" in errors(check(root)), protocol


def test_savedmodel_files_are_weights(tmp_path: Path) -> None:
    (tmp_path / "variables").mkdir()
    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01\x12\x00" + bytes(20))
    (tmp_path / "variables" / "variables.index").write_bytes(bytes(30))
    (tmp_path / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(64))
    assert sniff.is_weight_name("variables/variables.data-00000-of-00001")
    manifest(tmp_path, HEAD + "artifacts: []\n")
    undeclared = " ".join(f.message for f in check(tmp_path).findings if f.rule == "PG206")
    for rel in ("saved_model.pb", "variables.index", "variables.data-00000-of-00001"):
        assert rel in undeclared, rel
    rels = (
        "saved_model.pb",
        "variables/variables.index",
        "variables/variables.data-00000-of-00001",
    )
    manifest(
        tmp_path,
        HEAD + artifact_yaml(tmp_path, *rels) + "policy:\n  allowed_formats: [savedmodel]\n",
    )
    report = check(tmp_path)
    assert errors(report) == [] and {a.format for a in report.artifacts} == {"savedmodel"}
