from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate import manifest
from gate.errors import ManifestError

CASES = sorted((Path(__file__).parent / "cases" / "manifest").glob("*.yaml"))


def expected(path: Path) -> list[str]:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    m = re.fullmatch(r"# expect: (.*)", first)
    assert m, f"{path.name}: first line must be `# expect: ...`"
    return [] if m.group(1) == "valid" else m.group(1).split()


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_manifest_case(case: Path) -> None:
    parsed, findings = manifest.parse(case.read_bytes(), case.name)
    got = [f"{f.rule}@{f.location.line}:{f.location.column}" for f in findings]
    assert got == expected(case)
    assert (parsed is None) == bool(findings)
    for f in findings:
        assert f.location.path == case.name
        assert f.found, "every finding says what was found"


def test_cases_cover_every_manifest_rule() -> None:
    seen = {e.split("@")[0] for c in CASES for e in expected(c)}
    assert seen == {"PG101", "PG102", "PG103"}


def test_valid_manifest_is_typed() -> None:
    m, _ = manifest.parse((CASES[0].parent / "valid-full.yaml").read_bytes(), "p.yaml")
    assert m is not None
    assert m.origin == "derived"
    assert m.card == "MODEL_CARD.md"
    assert [b.name for b in m.base_models] == ["meta-llama/Llama-2-7b-hf", "bases/other"]
    assert m.base_models[1].weight == 0.25
    assert m.policy.allowed_formats == ("safetensors", "gguf", "pickle")
    assert m.policy.license_allow == ("apache-2.0", "llama2")
    assert m.policy.references == ("known/base",)
    assert m.policy.lineage_strict
    assert m.ignore == ("checkpoints/**",)
    assert m.locate("artifacts", 0, "sha256").line == 22
    assert m.locate("artifacts", 0, "nonexistent").line == 20  # the item itself


def test_defaults() -> None:
    m, _ = manifest.parse((CASES[0].parent / "valid-minimal.yaml").read_bytes(), "p.yaml")
    assert m is not None
    assert m.card == "README.md"
    assert m.policy.allowed_formats == ("safetensors", "gguf", "onnx")
    assert m.policy.license_allow is None
    assert m.artifacts == ()


def test_schema_messages_name_the_field() -> None:
    _, findings = manifest.parse(
        b"version: 1\nmodel:\n  name: x\n  license: mit\n  origin: derived\n", "p"
    )
    assert "base_models" in findings[0].message
    _, findings = manifest.parse(
        b"version: 1\nmodel: {name: x, license: mit, origin: s, x: 1}\n", "p"
    )
    messages = " | ".join(f.message for f in findings)
    assert "unexpected key `x`" in messages
    assert "model.origin" in messages


def test_missing_manifest_raises_with_hint(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as e:
        manifest.read_bytes(str(tmp_path / "nope.yaml"), "nope.yaml")
    assert e.value.hint
    assert "init" in e.value.hint


def test_manifest_size_cap(tmp_path: Path) -> None:
    big = tmp_path / "p.yaml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ManifestError, match="limit"):
        manifest.read_bytes(str(big), "p.yaml")


def test_manifest_directory_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not a regular file"):
        manifest.read_bytes(str(tmp_path), "p.yaml")


def test_every_schema_field_is_documented() -> None:
    def walk(node: object, path: str) -> list[str]:
        missing = []
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if isinstance(sub, dict) and "description" not in sub and "$ref" not in sub:
                    missing.append(f"{path}.{name}")
            for key, sub in node.items():
                missing += walk(sub, f"{path}/{key}")
        return missing

    assert walk(manifest.schema(), "") == []


YAML_ALPHABET = st.sampled_from(
    [
        *list("abc:-[]{},&*!#|>'\"\n \t0123456789.%@`?"),
        "version: 1\n",
        "model:\n",
        "  ",
        "- ",
        "<<: ",
        "!!python/object:os.system ",
        "ÿ",
        "\u2028",
    ]
)


@settings(max_examples=300, deadline=2000)
@given(st.lists(YAML_ALPHABET, max_size=120).map("".join))
def test_fuzz_manifest_loader_ends_in_value_or_located_finding(text: str) -> None:
    parsed, findings = manifest.parse(text.encode("utf-8", "surrogatepass"), "p.yaml")
    assert (parsed is None) == bool(findings)
    for f in findings:
        assert f.rule in {"PG101", "PG102", "PG103"}
        assert f.location.line >= 1 and f.location.column >= 1


@settings(max_examples=200, deadline=2000)
@given(st.binary(max_size=400))
def test_fuzz_manifest_loader_on_bytes(data: bytes) -> None:
    parsed, findings = manifest.parse(data, "p.yaml")
    assert (parsed is None) == bool(findings)
