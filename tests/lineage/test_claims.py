"""The claim check's judgement, without weights: a declared relation against a hand-built
verdict of the weight tiers -> the rule ids it must raise (none when they agree), located on the
base model's entry in the manifest."""

from __future__ import annotations

from typing import Any

import pytest

from gate import manifest, rules
from gate.lineage.claims import judge_base
from gate.lineage.exact import ExactEvidence
from gate.lineage.result import Relation, Verdict

MANIFEST = b"""version: 1
model:
  name: demo
  license: apache-2.0
  origin: derived
base_models:
  - path: base-a
    relation: %s
    license: apache-2.0
"""


def _manifest(relation: str, weight: float | None = None) -> manifest.Manifest:
    text = MANIFEST % relation.encode()
    if weight is not None:
        text += b"    weight: %s\n" % str(weight).encode()
    m, problems = manifest.parse(text, "provenance.yaml")
    assert m is not None, problems
    return m


def _verdict(relation: Relation, dependent: bool, **details: Any) -> Verdict:
    return Verdict(
        reference="base-a",
        relation=relation,
        dependent=dependent,
        p_value=1e-12 if dependent else 0.4,
        log10_p=-12.0 if dependent else -0.4,
        p_method="fisher",
        tests=10,
        effects={},
        details=details,
        structure={},
        layers=(),
        tensors=(),
    )


MERGE = {"method": "linear", "parents": ["other", "base-a"], "mean_coefficients": [0.3, 0.7]}

# declared relation, found relation, dependent, verdict details, declared weight -> rules
TABLE: list[tuple[str, Relation, bool, dict[str, Any], float | None, list[str]]] = [
    ("finetune", "finetune", True, {}, None, []),
    ("finetune", "merge", True, {}, None, []),  # one local parent of a merge looks fine-tuned
    ("merge", "finetune", True, {}, None, []),
    ("copy", "copy", True, {}, None, []),
    ("quantized", "quantized", True, {}, None, []),
    ("pruned", "pruned", True, {}, None, []),
    ("adapter", "adapter", True, {}, None, []),
    ("adapter", "finetune", True, {"adapter_rank": 8}, None, []),  # a merged adapter
    ("adapter", "finetune", True, {}, None, ["PG505"]),
    ("finetune", "independent", False, {}, None, ["PG506"]),
    ("copy", "independent", False, {}, None, ["PG506"]),
    ("finetune", "quantized", False, {}, None, ["PG506"]),  # a relation without significance
    ("adapter", "adapter", False, {}, None, []),  # an adapter's evidence is its shapes
    ("copy", "finetune", True, {}, None, ["PG503"]),
    ("copy", "quantized", True, {}, None, ["PG503"]),
    ("finetune", "copy", True, {}, None, ["PG504"]),
    ("quantized", "copy", True, {}, None, ["PG504"]),
    ("quantized", "finetune", True, {}, None, ["PG505"]),
    ("finetune", "pruned", True, {}, None, ["PG505"]),
    ("pruned", "finetune", True, {}, None, ["PG505"]),
    ("finetune", "adapter", True, {}, None, ["PG505"]),
    ("merge", "merge", True, {"merge": MERGE}, 0.7, []),
    ("merge", "merge", True, {"merge": MERGE}, 0.72, []),  # within the tolerance
    ("merge", "merge", True, {"merge": MERGE}, 0.5, ["PG507"]),
    ("merge", "merge", True, {}, 0.5, []),  # no recovered coefficients: nothing to compare
    # a distilled student: the weights cannot test it, whatever they show but a copy
    ("distill", "independent", False, {}, None, ["PG512"]),
    ("distill", "finetune", True, {}, None, ["PG512"]),
    ("distill", "copy", True, {}, None, ["PG504"]),
    # a sibling is no base: the declared relation fails, whichever it is
    ("finetune", "sibling", True, {}, None, ["PG505"]),
    ("pruned", "sibling", True, {}, None, ["PG505"]),
]


@pytest.mark.parametrize(("declared", "found", "dependent", "details", "weight", "expected"), TABLE)
def test_declared_relation_against_verdict(
    declared: str,
    found: Relation,
    dependent: bool,
    details: dict[str, Any],
    weight: float | None,
    expected: list[str],
) -> None:
    m = _manifest(declared, weight)
    got = judge_base(m, 0, m.base_models[0], None, _verdict(found, dependent, **details))
    assert [f.rule for f in got] == expected
    for f in got:
        assert f.severity == rules.RULES[f.rule].severity  # PG504/PG507 warn, others fail
        assert f.declared is not None and f.found is not None
        line = 10 if f.rule == "PG507" else 7  # the weight, else the base's entry
        assert f.location.line == line, f


def test_findings_name_both_sides() -> None:
    m = _manifest("copy")
    exact = ExactEvidence("base-a", 10, 4, 1000, 400, 0, (("w", "w"),))
    (got,) = judge_base(m, 0, m.base_models[0], exact, _verdict("finetune", True))
    assert got.declared == "copy of base-a"
    assert str(got.found).startswith("finetune of base-a (p = 1.0e-12")
    assert got.hint == "declare `relation: finetune`"
    assert got.details[0] == exact.summary()  # the exact tier's count comes first


def test_a_sibling_declared_as_a_base_says_so() -> None:
    m = _manifest("finetune")
    summary = "shared ancestry: token_embd.weight related (|r| 0.87), no layer related"
    (got,) = judge_base(m, 0, m.base_models[0], None, _verdict("sibling", True, summary=summary))
    assert "sibling of base-a" in got.message and "no layer related" in got.message
    assert got.hint is not None and "declare that ancestor as the base" in got.hint


def test_distill_stays_a_note_under_strict() -> None:
    m = _manifest("distill")
    (got,) = judge_base(m, 0, m.base_models[0], None, _verdict("independent", False))
    assert rules.strict(got).severity == "note"  # a claim weights cannot test, not a failed check
    assert "cannot test it" in got.message and got.hint and "probe" in got.hint


def test_merge_weight_is_located_and_hinted() -> None:
    m = _manifest("merge", 0.5)
    (got,) = judge_base(m, 0, m.base_models[0], None, _verdict("merge", True, merge=MERGE))
    assert (got.declared, got.found) == ("0.5", "0.7")
    assert got.hint == "declare `weight: 0.70`"
