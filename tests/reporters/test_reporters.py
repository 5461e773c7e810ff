from __future__ import annotations

import json

import jsonschema
import pytest

from gate import reporters, rules
from gate.findings import ArtifactResult, Finding, Location, Report
from gate.manifest import schema
from gate.reporters import github


def finding(
    rule: str = "PG204", msg: str = "m.safetensors: sha256 differs", **kw: object
) -> Finding:
    base = {
        "declared": "aa" * 32,
        "found": "bb" * 32,
        "hint": "run `provenance-gate lock`",
        "details": (),
    }
    base.update(kw)
    return rules.RULES[rule].finding(Location("provenance.yaml", 9, 13), msg, **base)  # type: ignore[arg-type]


def report(*findings: Finding, root: str = "/repo") -> Report:
    return Report(
        tool_version="9.9.9",
        root=root,
        manifest="provenance.yaml",
        findings=findings,
        artifacts=(
            ArtifactResult("m.safetensors", "safetensors", "content", False, 10, "bb" * 32),
            ArtifactResult("p.bin", "pickle", "lfs-pointer", True, 5, "cc" * 32),
        ),
    )


HOSTILE = finding(
    "PG206",
    "weird|name,with:colons%and\nnewline`tick`.safetensors is not declared",
    declared="(not declared)",
    found="a|b",
    details=("changed: x|y",),
)
MIXED = report(
    HOSTILE, finding(), finding("PG501", "lineage not checked", declared="x", found="not checked")
)


@pytest.mark.parametrize("name", reporters.FORMATS)
def test_every_reporter_renders_every_finding(name: str) -> None:
    out = reporters.get(name, reporters.ReporterOptions()).render(MIXED)
    assert out.endswith("\n") or name == "markdown"
    # an attestation or a BOM states the verdict and the rules that failed it, not every note
    verdict_only = name == "intoto" or name.startswith("cyclonedx")
    shown = ("PG206", "PG204") if verdict_only else ("PG206", "PG204", "PG501")
    for rule in shown:
        assert rule in out
    if verdict_only:
        assert "PG501" not in out


def test_json_matches_its_schema_and_the_report() -> None:
    doc = json.loads(reporters.get("json", reporters.ReporterOptions()).render(MIXED))
    jsonschema.Draft202012Validator(schema("report.v1.schema.json")).validate(doc)
    assert doc["verdict"] == "fail"
    assert doc["exit_code"] == 1
    assert [f["rule"] for f in doc["findings"]] == ["PG204", "PG206", "PG501"]  # errors first
    f = doc["findings"][0]
    assert f["location"] == {"path": "provenance.yaml", "line": 9, "column": 13}
    assert f["declared"] == "aa" * 32
    assert f["found"] == "bb" * 32
    assert doc["summary"] == {
        "error": 2,
        "warning": 0,
        "note": 1,
        "artifacts": 2,
        "content_verified": 0,
        "pointer_verified": 1,
    }


def test_text_exact() -> None:
    out = reporters.get("text", reporters.ReporterOptions()).render(report(finding()))
    assert out == (
        "provenance.yaml:9:13: error PG204 sha256-mismatch: m.safetensors: sha256 differs\n"
        f"    declared: {'aa' * 32}\n"
        f"    found:    {'bb' * 32}\n"
        "    hint: run `provenance-gate lock`\n"
        "FAIL: 1 error(s), 0 warning(s), 0 note(s); 2 artifact(s) checked; 1 from LFS pointers (content not read)\n"
    )


def test_text_colour_only_when_asked() -> None:
    plain = reporters.get("text", reporters.ReporterOptions()).render(report(finding()))
    colour = reporters.get("text", reporters.ReporterOptions(color=True)).render(report(finding()))
    assert "\x1b[" not in plain
    assert "\x1b[31;1merror\x1b[0m" in colour


def test_github_escapes_data_and_properties() -> None:
    out = reporters.get("github", reporters.ReporterOptions()).render(report(HOSTILE))
    line = out.splitlines()[0]
    assert line.startswith(
        "::error file=provenance.yaml,line=9,col=13,title=PG206 undeclared-weight-file::"
    )
    body = line.split("::", 2)[2]
    assert "\n" not in body
    assert "%0A" in body
    assert "%25and" in body
    assert github.escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"


def test_github_paths_relative_to_workspace() -> None:
    r = report(finding(), root="/ws/models/demo")
    out = reporters.get("github", reporters.ReporterOptions(workspace="/ws")).render(r)
    assert "file=models/demo/provenance.yaml," in out


def test_github_caps_each_level_errors_first() -> None:
    many = [finding(msg=f"e{i}") for i in range(25)] + [finding("PG501", f"n{i}") for i in range(3)]
    out = reporters.get("github", reporters.ReporterOptions()).render(report(*many)).splitlines()
    errors = [line for line in out if line.startswith("::error")]
    assert len(errors) == github.PER_LEVEL_CAP
    assert "16 more error finding(s)" in errors[-1]
    assert out.index(errors[-1]) < min(
        i for i, line in enumerate(out) if line.startswith("::notice")
    )
    assert len([line for line in out if line.startswith("::notice")]) == 3


def test_sarif_structure() -> None:
    doc = json.loads(reporters.get("sarif", reporters.ReporterOptions(workspace="/")).render(MIXED))
    assert doc["version"] == "2.1.0"
    run = doc["runs"][0]
    ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert len(ids) == len(set(ids)) == len(rules.RULES)
    for result in run["results"]:
        assert ids[result["ruleIndex"]] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note")
        loc = result["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uri"] == "repo/provenance.yaml"
        assert loc["region"] == {"startLine": 9, "startColumn": 13}


def test_markdown_escapes_table_cells() -> None:
    out = reporters.get("markdown", reporters.ReporterOptions()).render(report(HOSTILE))
    row = next(line for line in out.splitlines() if "PG206" in line)
    assert row.count(" | ") == 5  # pipes inside cells are escaped
    assert "weird\\|name" in row
    assert "<br>" in row
    assert "a\\|b" in row
    assert "| p.bin | pickle | LFS pointer (content not read) | ok |" in out


def test_passing_report() -> None:
    r = Report(tool_version="1", root="/r", manifest="provenance.yaml", findings=())
    assert "PASS" in reporters.get("text", reporters.ReporterOptions()).render(r)
    assert "✅" in reporters.get("markdown", reporters.ReporterOptions()).render(r)
