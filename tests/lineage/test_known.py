"""`check` against pack indexes (gate/checks/known.py): a `scratch` model matching a known base
(PG513), a derived model whose weights come from a base it does not declare (PG514), ancestors
of a declared base, unusable indexes, and the verdict cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gate.cache import StatCache
from gate.lineage import index, pack
from gate.scanner import Scanner
from tests.helpers import artifact_yaml, check, errors, manifest, rules_of
from tests.hubserver import llama_family

HEAD = "version: 1\nmodel:\n  name: demo\n  license: apache-2.0\n  origin: {origin}\n"


@pytest.fixture(scope="module")
def fam(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("known")
    a = llama_family(str(root / "a"), hidden=128, inter=352, vocab=1024, layers=2, seed=5)
    b = llama_family(str(root / "b"), hidden=128, inter=352, vocab=1024, layers=2, seed=6,
                     kinds=("base",))  # fmt: skip
    # a fine-tune of a's fine-tune: its ancestors are a's finetune and a's base
    c = llama_family(str(root / "c"), hidden=128, inter=352, vocab=1024, layers=2, seed=5,
                     kinds=("finetune",))  # fmt: skip
    out = {**a, "other": b["base"], "grandchild": c["finetune"]}
    packs = root / "packs"
    packs.mkdir()
    pack.fingerprint(a["base"], str(packs / f"a{pack.SUFFIX}"), scanner=Scanner(), name="acme/a")
    out["pack"] = str(packs / f"a{pack.SUFFIX}")
    return out


def model_repo(root: Path, weights: str, body: str, origin: str = "scratch") -> Path:
    """A repository holding a copy of `weights`, an index of the family's base in `index/`,
    and a manifest declaring the weights truthfully, then `body`."""
    root.mkdir(exist_ok=True)
    shutil.copy(Path(weights) / "model.safetensors", root / "model.safetensors")
    shutil.copy(Path(weights) / "config.json", root / "config.json")
    manifest(root, HEAD.format(origin=origin) + artifact_yaml(root, "model.safetensors") + body)
    return root


def indexed(root: Path, fam: dict[str, str]) -> None:
    index.add(str(root / "index"), [fam["pack"]])


INDEX = "policy:\n  lineage:\n    index: [index]\n"


def test_a_scratch_copy_of_a_known_base_fails(tmp_path: Path, fam: dict[str, str]) -> None:
    root = model_repo(tmp_path / "r", fam["base"], INDEX)
    indexed(root, fam)
    report = check(root)
    assert errors(report) == ["PG513"]
    (f,) = [f for f in report.findings if f.rule == "PG513"]
    assert f.location.line == 5 and "copy of known base acme/a" in f.message
    assert "PG511" in rules_of(report, "note")  # no references: tested against indexes only
    # the exact depth finds it from the files' SHA-256 alone (no pack opened)
    exact = check(root, lineage_depth="exact")
    assert "PG513" in errors(exact)
    assert [f.found for f in exact.findings if f.rule == "PG513"] == ["copy of acme/a"]


def test_a_scratch_fine_tune_of_a_known_base_fails(tmp_path: Path, fam: dict[str, str]) -> None:
    root = model_repo(tmp_path / "r", fam["finetune"], INDEX)
    indexed(root, fam)
    (f,) = [f for f in check(root).findings if f.rule == "PG513"]
    assert "finetune of known base acme/a" in f.message and f.details


def test_an_independent_scratch_model_passes(tmp_path: Path, fam: dict[str, str]) -> None:
    root = model_repo(tmp_path / "r", fam["independent"], INDEX)
    indexed(root, fam)
    report = check(root)
    assert errors(report) == []
    assert "undeclared" not in " ".join(f.message for f in report.findings)  # packs: not weights


def test_a_derived_model_from_an_undeclared_base_fails(tmp_path: Path, fam: dict[str, str]) -> None:
    """Declared a fine-tune of `other`, but its weights come from acme/a."""
    shutil.copytree(fam["other"], tmp_path / "r" / "other")
    body = "base_models:\n  - path: other\n    relation: finetune\n" + INDEX
    root = model_repo(tmp_path / "r", fam["finetune"], body, origin="derived")
    indexed(root, fam)
    report = check(root)
    assert "PG514" in errors(report) and "PG506" in errors(report)
    (f,) = [f for f in report.findings if f.rule == "PG514"]
    assert (
        f.location.line == 11 and "acme/a" in f.message and "no declared base derives" in f.message
    )


def test_the_declared_base_and_its_ancestors_are_no_finding(
    tmp_path: Path, fam: dict[str, str]
) -> None:
    # the pack is the declared base (same weight file)
    shutil.copytree(fam["base"], tmp_path / "r" / "base")
    body = "base_models:\n  - path: base\n    relation: finetune\n" + INDEX
    root = model_repo(tmp_path / "r", fam["finetune"], body, origin="derived")
    indexed(root, fam)
    assert "PG514" not in rules_of(check(root))
    # the declared base (a's fine-tune) derives from the pack: an ancestor, not a finding
    shutil.copytree(fam["finetune"], tmp_path / "s" / "parent")
    body = "base_models:\n  - path: parent\n    relation: finetune\n" + INDEX
    root = model_repo(tmp_path / "s", fam["grandchild"], body, origin="derived")
    indexed(root, fam)
    report = check(root)
    assert "PG514" not in rules_of(report), [f.message for f in report.findings]


def test_a_hub_base_that_cannot_be_tested_gives_a_warning(
    tmp_path: Path, fam: dict[str, str]
) -> None:
    body = ("base_models:\n  - id: acme/other\n    revision: " + "a" * 40
            + "\n    relation: finetune\n" + INDEX)  # fmt: skip
    root = model_repo(tmp_path / "r", fam["finetune"], body, origin="derived")
    indexed(root, fam)
    report = check(root, offline=True)
    (f,) = [f for f in report.findings if f.rule == "PG514"]
    assert f.severity == "warning" and "cannot be told" in f.message


@pytest.mark.parametrize(
    ("entry", "make", "message"),
    [
        ("../outside", None, "outside"),
        ("index", "{", "not a valid index"),
        ("missing", None, "no index.json"),
    ],
)
def test_an_unusable_index_is_located(tmp_path: Path, fam: dict[str, str], entry: str,
                                      make: str | None, message: str) -> None:  # fmt: skip
    root = model_repo(tmp_path / "r", fam["base"], f"policy:\n  lineage:\n    index: [{entry}]\n")
    if make is not None:
        (root / entry).mkdir()
        (root / entry / "index.json").write_text(make)
    (root / "missing").mkdir()
    report = check(root)
    (f,) = [f for f in report.findings if f.rule == "PG501" and "pack index" in f.message]
    assert message in f.message and f.location.line == 13
    assert check(root, strict=True).exit_code == 1


def test_the_bundled_index_can_be_turned_off(tmp_path: Path, fam: dict[str, str]) -> None:
    root = model_repo(
        tmp_path / "r", fam["base"], "policy:\n  lineage:\n    bundled_index: false\n"
    )
    report = check(root)
    (f,) = [f for f in report.findings if f.rule == "PG511"]
    assert "not tested" in f.message


def test_a_warm_check_reuses_the_findings(tmp_path: Path, fam: dict[str, str]) -> None:
    root = model_repo(tmp_path / "r", fam["finetune"], INDEX)
    indexed(root, fam)
    cache = StatCache(str(tmp_path / "cache"))
    try:
        first = check(root, scanner=Scanner(cache=cache))
        cache.flush()
        (root / "index" / index.INDEX_FILE).unlink()  # a changed index is a new key...
        assert "PG513" not in errors(check(root, scanner=Scanner(cache=cache)))
        indexed(root, fam)
        again = check(root, scanner=Scanner(cache=cache))
    finally:
        cache.close()
    assert [f for f in first.findings if f.rule == "PG513"] == [
        f for f in again.findings if f.rule == "PG513"
    ]
