"""License and model-card checks, as cases: each folder under tests/cases/licenses holds a
manifest whose first line names the expected findings (rule@line:col), a card, and sometimes a
LICENSE file or a local base model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gate import licenses, manifest, rules
from gate.checks import declarations
from gate.findings import Finding

CASES = sorted(p for p in (Path(__file__).parent / "cases" / "licenses").iterdir() if p.is_dir())


def expected(case: Path) -> list[str]:
    first = (case / "provenance.yaml").read_text().split("\n", 1)[0]
    m = re.fullmatch(r"# expect: (.*)", first)
    assert m, f"{case.name}: first line must be `# expect: ...`"
    return [] if m.group(1) == "none" else m.group(1).split()


def run(case: Path) -> list[Finding]:
    parsed, problems = manifest.parse((case / "provenance.yaml").read_bytes(), "provenance.yaml")
    assert parsed is not None, problems
    return declarations.check_manifest(str(case), parsed)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_license_case(case: Path) -> None:
    findings = run(case)
    assert [f"{f.rule}@{f.location.line}:{f.location.column}" for f in findings] == expected(case)
    for f in findings:
        assert f.location.path == "provenance.yaml"
        assert f.found, "every finding says what was found"


def test_cases_cover_every_license_and_card_rule() -> None:
    seen = {e.split("@")[0] for c in CASES for e in expected(c)}
    catalogue = {r for r in rules.RULES if r.startswith(("PG4", "PG6"))}
    assert seen == catalogue


def test_every_row_of_the_inheritance_table_has_a_case() -> None:
    bases = set()
    for case in CASES:
        parsed, _ = manifest.parse((case / "provenance.yaml").read_bytes(), "p.yaml")
        assert parsed is not None
        for b in parsed.base_models:
            lic = licenses.parse(b.license) if b.license else None
            if lic is not None and lic.tree is not None:
                bases |= {licenses.class_of(i) for i in lic.ids}
    rows = set(licenses.data()["classes"]) - {"unknown"}  # `unknown` is PG402 on the model
    assert rows <= bases | {"unclassified"}
    assert "unclassified" in bases


def test_card_disagreement_names_the_card_line() -> None:
    (f,) = run(next(c for c in CASES if c.name == "card-license-disagrees"))
    assert f.message == "`license` is `apache-2.0` here but `mit` in README.md:2"
    (g,) = run(next(c for c in CASES if c.name == "card-relation-disagrees"))
    assert "README.md:4" in g.message


def test_inheritance_finding_explains_base_term_and_fix() -> None:
    (f,) = run(next(c for c in CASES if c.name == "llama2-relicensed"))
    assert f.message.startswith("org/base is licensed `llama2`, which requires: redistribute")
    assert f.details == ("term: Llama 2 Community License Agreement, sections 1.b.i-iii and 2",)
    assert f.hint == "a consistent declaration: license: llama2"
