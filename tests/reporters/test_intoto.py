"""`--report intoto:PATH`: the verdict as an in-toto Statement v1 with a SLSA VSA v1 predicate,
checked with the in-toto project's own protobuf definitions (unknown fields refused)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from google.protobuf import json_format
from in_toto_attestation.v1 import statement, statement_pb2

import gate
from gate.cli import main
from gate.reporters.intoto import PREDICATE_TYPE, model_digest
from tests.helpers import artifact_yaml, manifest, tensors, write_st


def repo(root: Path, tamper: bool = False) -> Path:
    root.mkdir()
    write_st(root / "model.safetensors", tensors(seed=1))
    write_st(root / "sub" / "a.safetensors", tensors(seed=3))
    head = "version: 1\nmodel:\n  name: acme/tiny\n  license: mit\n  origin: scratch\n"
    manifest(root, head + artifact_yaml(root, "model.safetensors", "sub/a.safetensors"))
    if tamper:
        write_st(root / "model.safetensors", tensors(seed=2))
    return root


# The VSA predicate's shape as SLSA's spec text defines it (v1.0, with v1.1's verifier version:
# "the specification texts are the canonical source"). in-toto-attestation 0.9.3's protobuf is
# behind it (no verifier version, verifiedLevels a single string), so the Statement is parsed
# with the protobuf and the predicate against this.
RFC3339 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$"
DIGESTS = {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}}
VSA_V1 = {
    "type": "object",
    "additionalProperties": False,
    "required": ["verifier", "timeVerified", "resourceUri", "policy", "verificationResult",
                 "verifiedLevels"],
    "properties": {
        "verifier": {"type": "object", "additionalProperties": False, "required": ["id"],
                     "properties": {"id": {"type": "string", "format": "uri"},
                                    "version": {"type": "object",
                                                "additionalProperties": {"type": "string"}}}},
        "timeVerified": {"type": "string", "pattern": RFC3339},
        "resourceUri": {"type": "string"},
        "policy": {"type": "object", "properties": {"uri": {"type": "string"},
                                                   "digest": DIGESTS}},
        "inputAttestations": {"type": "array"},
        "verificationResult": {"enum": ["PASSED", "FAILED"]},
        "verifiedLevels": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "dependencyLevels": {"type": "object", "additionalProperties": {"type": "integer"}},
        "slsaVersion": {"type": "string"},
    },
}  # fmt: skip


def validated(path: Path) -> dict[str, object]:
    import jsonschema

    doc = json.loads(path.read_text())
    pb = json_format.ParseDict(doc, statement_pb2.Statement())  # refuses unknown fields
    statement.Statement(list(pb.subject), pb.predicate_type, doc["predicate"]).validate()
    assert doc["predicateType"] == PREDICATE_TYPE
    jsonschema.Draft202012Validator(VSA_V1).validate(doc["predicate"])
    levels = doc["predicate"]["verifiedLevels"]
    assert not any(level.startswith("SLSA_") for level in levels)  # reserved for SLSA's tracks
    assert doc["predicate"]["verifier"]["version"] == {"provenance-gate": gate.__version__}
    return doc


@pytest.mark.parametrize("tamper", [False, True])
def test_a_passing_and_a_failing_verdict(tmp_path: Path, tamper: bool) -> None:
    root = repo(tmp_path / "m", tamper)
    out = tmp_path / "vsa.json"
    rc = main(["check", str(root), "--report", f"intoto:{out}", "--no-cache"])
    assert rc == (1 if tamper else 0)
    doc = validated(out)
    predicate = doc["predicate"]
    assert isinstance(predicate, dict)
    assert predicate["verificationResult"] == ("FAILED" if tamper else "PASSED")
    assert predicate["verifiedLevels"] == (["FAILED"] if tamper else ["PROVENANCE_GATE_VERIFIED"])
    manifest_sha = hashlib.sha256((root / "provenance.yaml").read_bytes()).hexdigest()
    assert predicate["policy"] == {"uri": "provenance.yaml", "digest": {"sha256": manifest_sha}}
    subjects = {s["name"]: s for s in doc["subject"]}  # type: ignore[attr-defined]
    found = hashlib.sha256((root / "model.safetensors").read_bytes()).hexdigest()
    assert subjects["model.safetensors"]["digest"] == {"sha256": found}  # the bytes as found
    model = subjects["acme/tiny"]
    assert model["annotations"]["provenance-gate.failedRules"] == (
        ["PG204", "PG205"] if tamper else []
    )
    files = {n: s["digest"]["sha256"] for n, s in subjects.items() if n != "acme/tiny"}
    assert model["digest"]["sha256"] == model_digest(files)


def test_the_model_digest_orders_paths_as_model_signing_does() -> None:
    """Component by component, as model_signing sorts its manifest's paths: `a/b` before
    `a.txt` (a string sort puts `a.txt` first, '.' < '/')."""
    d = {"a.txt": "11" * 32, "a/b": "22" * 32}
    expected = hashlib.sha256(bytes.fromhex("22" * 32) + bytes.fromhex("11" * 32)).hexdigest()
    assert model_digest(d) == expected
    assert model_digest({}) == hashlib.sha256(b"").hexdigest()
