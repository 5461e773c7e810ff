"""Hub base models and Hub references against the in-memory Hub (tests/fakehub.py): pinning,
every failure kind, one finding per model, LFS-digest copies, through the real `check`."""

from __future__ import annotations

from pathlib import Path

from gate import checks
from gate.findings import Report
from gate.hubclient import HubError
from tests.fakehub import FakeHub
from tests.helpers import artifact_yaml, write_st


def _repo(root: Path, *, origin: str, bases: str = "", extra: str = "") -> Path:
    write_st(root / "model.safetensors", seed=1)
    head = f"version: 1\nmodel:\n  name: m\n  license: apache-2.0\n  origin: {origin}\n"
    body = head + (f"base_models:\n{bases}" if bases else "")
    (root / "provenance.yaml").write_text(body + artifact_yaml(root, "model.safetensors") + extra)
    return root


def _check(root: Path, hub: FakeHub, strict: bool = False) -> Report:
    options = checks.Options(lineage_depth="exact", strict=strict)
    return checks.check(checks.Target.resolve(str(root), None), options, None, lambda: hub)


def _base(repo: str, revision: str, relation: str = "finetune") -> str:
    return f'  - id: {repo}\n    revision: "{revision}"\n    relation: {relation}\n    license: apache-2.0\n'


def test_a_scratch_claim_identical_to_a_hub_file_fails_without_a_download(tmp_path: Path) -> None:
    hub = FakeHub()
    root = _repo(tmp_path / "m", origin="scratch")
    sha = hub.add("acme/base", {"model.safetensors": (root / "model.safetensors").read_bytes()})
    refs = f'policy:\n  lineage:\n    references: ["hf://acme/base@{sha}"]\n'
    (root / "provenance.yaml").write_text((root / "provenance.yaml").read_text() + refs)
    report = _check(root, hub)
    (f,) = [f for f in report.findings if f.rule == "PG502"]
    assert "by the Hub's LFS digests" in f.found and report.exit_code == 1
    assert not [c for c in hub.calls if c[0] == "read_range"]


def test_an_unpinned_base_names_its_commit(tmp_path: Path) -> None:
    hub = FakeHub()
    sha = hub.add("acme/base", {"README.md": b"---\nlicense: apache-2.0\n---\n"})
    report = _check(_repo(tmp_path, origin="derived", bases=_base("acme/base", "main")), hub)
    (f,) = [f for f in report.findings if f.rule == "PG801"]
    assert sha in (f.hint or "") and f.location.line == 8  # the `revision:` line


def test_each_failure_kind_is_one_finding_per_model(tmp_path: Path) -> None:
    sha = "0" * 40
    cases = {
        "denied": ("PG803", "warning"),
        "offline": ("PG802", "note"),
        "unreachable": ("PG802", "note"),
        "not-found": ("PG804", "error"),
    }
    for kind, (rule, severity) in cases.items():
        hub = FakeHub()
        hub.add("acme/base", {}, error=HubError(kind, f"acme/base: {kind}"))  # type: ignore[arg-type]
        root = _repo(tmp_path / kind, origin="derived", bases=_base("acme/base", sha))
        report = _check(root, hub)
        hub_findings = [f for f in report.findings if f.rule.startswith("PG80")]
        assert [(f.rule, f.severity) for f in hub_findings] == [(rule, severity)], kind
        if rule in ("PG802", "PG803"):  # a check that could not run fails a strict run
            assert [
                f.severity for f in _check(root, hub, strict=True).findings if f.rule == rule
            ] == ["error"]


def test_an_offline_hub_is_not_asked_twice_for_the_same_model(tmp_path: Path) -> None:
    hub = FakeHub(offline=True)
    hub.add("acme/base", {"model.safetensors": b"x"})
    report = _check(_repo(tmp_path, origin="derived", bases=_base("acme/base", "1" * 40)), hub)
    assert [f.rule for f in report.findings if f.rule.startswith("PG80")] == ["PG802"]
    assert len([c for c in hub.calls if c[0] == "files"]) == 1


def test_hub_findings_come_last_once_per_model() -> None:
    from gate import rules
    from gate.findings import Finding, Location
    from gate.hubmodels import once_per_model

    a, b = Location("provenance.yaml", 7), Location("provenance.yaml", 12)

    def f(rule: str, at: Location, message: str = "m") -> Finding:
        return rules.RULES[rule].finding(at, message, declared="d", found="f")

    found = [
        f("PG801", a),  # a's pin
        f("PG802", a, "offline"),  # a's first failure
        f("PG201", a),  # not the Hub's: keeps its place
        f("PG801", a),  # asked again by the license check
        f("PG804", a, "later"),  # a later failure of the same model
        f("PG802", b),  # another model
        f("PG805", a, "cache 1"),  # every refused cache copy is its own finding
        f("PG805", a, "cache 2"),
    ]
    got = once_per_model(found)
    assert [(g.rule, g.location.line, g.message) for g in got] == [
        ("PG201", 7, "m"),
        ("PG801", 7, "m"),
        ("PG802", 7, "offline"),
        ("PG802", 12, "m"),
        ("PG805", 7, "cache 1"),
        ("PG805", 7, "cache 2"),
    ]
