"""`--report cyclonedx:PATH` (spec 1.6) and `cyclonedx-1.7`: licenses, the card's fields, hostile
cards and configs, and the command line; every document through the strict schema validator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from gate.cli import main
from gate.findings import BaseLineage, Report
from gate.reporters import cyclonedx
from tests.helpers import artifact_yaml, check, manifest, write_st


def valid(doc: dict[str, Any], spec: str = "1.6") -> dict[str, Any]:
    version = SchemaVersion.V1_6 if spec == "1.6" else SchemaVersion.V1_7
    assert JsonStrictValidator(version).validate_str(json.dumps(doc)) is None
    return doc


def model(report: Report) -> dict[str, Any]:
    (component,) = valid(cyclonedx.bom(report))["components"]
    return component  # type: ignore[no-any-return]


def bare(**kw: Any) -> Report:
    return Report("1.0", "/nonexistent", "provenance.yaml", (), model_name="m", **kw)


@pytest.mark.parametrize(
    ("declared", "name", "link", "expected"),
    [
        ("mit", None, None, [{"license": {"id": "MIT"}}]),
        ("gpl-3.0", None, None, [{"license": {"id": "GPL-3.0-only"}}]),
        ("MIT OR apache-2.0", None, None, [{"expression": "MIT OR Apache-2.0"}]),
        (
            "GPL-2.0-only WITH Classpath-exception-2.0",
            None,
            None,
            [{"expression": "GPL-2.0-only WITH Classpath-exception-2.0"}],
        ),
        ("llama3.1", None, None, [{"license": {"name": "llama3.1"}}]),
        (
            "llama2 AND mit",
            None,
            None,
            [{"license": {"name": "llama2"}}, {"license": {"id": "MIT"}}],
        ),
        (
            "other",
            "Acme Model License",
            "https://acme.example/LICENSE",
            [{"license": {"name": "Acme Model License", "url": "https://acme.example/LICENSE"}}],
        ),
        ("not a (license", None, None, [{"license": {"name": "not a (license"}}]),
    ],
)
def test_licenses(
    declared: str, name: str | None, link: str | None, expected: list[dict[str, Any]]
) -> None:
    found = model(bare(license=declared, license_name=name, license_link=link))
    assert found["licenses"] == expected


def test_ancestors_without_evidence_say_so() -> None:
    bases = (
        BaseLineage("acme/base", "finetune", True, "a" * 40, "mit", summary="no usable weights"),
        BaseLineage("weird name/x y", "copy", True, "b" * 40),  # no valid purl for it
        BaseLineage("base", "finetune", False, found="finetune", log10_p=-400.0),
    )
    got = {a["bom-ref"]: a for a in model(bare(bases=bases))["pedigree"]["ancestors"]}
    assert "evidence" not in got["base:0"] and got["base:0"]["purl"].endswith("a" * 40)
    props = {p["name"]: p["value"] for p in got["base:0"]["properties"]}
    assert props["provenance-gate:relation:found"] == "not established"
    assert props["provenance-gate:evidence"] == "no usable weights"
    assert "purl" not in got["base:1"] and got["base:1"]["version"] == "b" * 40
    props = {p["name"]: p["value"] for p in got["base:2"]["properties"]}
    assert props["provenance-gate:pValue"] == "1e-400"  # not 0: p underflows a float
    assert got["base:2"]["evidence"]["identity"][0]["confidence"] == 1.0


def test_hostile_cards_and_configs_are_skipped_not_trusted(tmp_path: Path) -> None:
    root = tmp_path / "m"
    write_st(root / "model.safetensors", seed=1)
    manifest(root, "version: 1\nmodel:\n  name: m\n  license: mit\n  origin: scratch\n")
    (root / "provenance.yaml").write_text(
        (root / "provenance.yaml").read_text() + artifact_yaml(root, "model.safetensors")
    )
    (root / "README.md").write_text(
        "---\nlicense: mit\npipeline_tag: [not, a, string]\ndatasets: {a: 1}\n"
        "tags: [ok, 3, {x: 1}, " + "'" + "x" * 5000 + "']\n"
        "model-index: [{results: [{metrics: [{type: f1, value: true}, {type: acc, value: 1},"
        " 7]}, 3]}, nope]\n---\n"
    )
    (root / "config.json").write_text("[" * 100_000 + "]" * 100_000)  # deeper than json parses
    found = model(check(root))
    assert found["tags"][0] == "ok" and len(found["tags"][1]) == cyclonedx.MAX_TEXT
    card = found["modelCard"]
    assert "modelParameters" not in card  # no string task, no dataset list, no config
    assert card["quantitativeAnalysis"]["performanceMetrics"] == [{"type": "acc", "value": "1"}]
    (root / "config.json").write_text('{"model_type": "x"}' + " " * (2 << 20))  # over the cap
    assert "modelParameters" not in model(check(root)).get("modelCard", {})


@pytest.mark.parametrize(("fmt", "spec"), [("cyclonedx", "1.6"), ("cyclonedx-1.7", "1.7")])
def test_the_command_line_writes_either_spec(tmp_path: Path, fmt: str, spec: str) -> None:
    root = tmp_path / "m"
    write_st(root / "model.safetensors", seed=1)
    manifest(root, "version: 1\nmodel:\n  name: m\n  license: mit\n  origin: scratch\n")
    (root / "provenance.yaml").write_text(
        (root / "provenance.yaml").read_text() + artifact_yaml(root, "model.safetensors")
    )
    out = tmp_path / "bom.json"
    assert (
        main(["check", str(root), "--report", f"{fmt}:{out}", "-o", str(tmp_path / "out.txt")]) == 0
    )
    doc = valid(json.loads(out.read_text()), spec)
    assert doc["specVersion"] == spec
    (component,) = doc["components"]
    assert [f["name"] for f in component["components"]] == ["model.safetensors"]
