"""The lineage verdict as frozen values; every output format renders these."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Literal

Relation = Literal[
    "copy",
    "finetune",
    "merge",
    "quantized",
    "pruned",
    "adapter",
    "sibling",  # a common ancestor, and neither derives from the other
    "independent",
    "inconclusive",
]
RELATIONS: tuple[Relation, ...] = typing.get_args(Relation)
DEPENDENT: frozenset[str] = frozenset(RELATIONS) - {"independent", "inconclusive"}
DEFAULT_ALPHA = 1e-3
EXACT_LOG10_P = -1e9  # stands for p = 0: bit-identical non-constant tensors do not arise by chance


@dataclasses.dataclass(frozen=True)
class TensorEvidence:
    """The strongest test on one candidate tensor against its counterpart in the reference."""

    candidate: str
    reference: str
    layer: int | None
    test: str  # exact | recast | multiset | aligned | matched | vocabulary
    orientation: str
    rotated: bool
    effect: float
    null_effect: float
    log10_p: float  # uncorrected
    raw_effect: float = 0.0  # the effect before centring (see stats.Outcome)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LayerEvidence:
    """One row of the per-layer table."""

    layer: str  # layer index, or 'other' for embeddings, norms and heads
    tensors: int
    exact: int
    mean_effect: float
    min_log10_p: float
    reference_layer: int | None  # from the layer map, when one was computed
    decided_by: str  # the test of the layer's strongest evidence (exact, matched, aligned ...)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The relation of the candidate to one reference, with its evidence."""

    reference: str
    relation: Relation
    dependent: bool
    p_value: float | None  # corrected for every test and reference; None: not testable
    log10_p: float | None
    p_method: str
    tests: int
    effects: dict[str, float]
    details: dict[str, Any]
    structure: dict[str, Any]
    layers: tuple[LayerEvidence, ...]
    tensors: tuple[TensorEvidence, ...]
    notes: tuple[str, ...] = ()
    probe: dict[str, Any] | None = None  # tier 4, when asked for: gate/lineage/probe.py

    def summary(self) -> str:
        p = f"p {format_p(self.log10_p)}" if self.log10_p is not None else "p not testable"
        what = {
            "independent": f"independent of {self.reference}",
            "inconclusive": f"inconclusive against {self.reference}",
        }.get(self.relation, f"{self.relation} of {self.reference}")
        extra = self.details.get("summary")
        return f"{what} ({p}{'; ' + extra if extra else ''})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "relation": self.relation,
            "dependent": self.dependent,
            "p_value": self.p_value,
            "log10_p": self.log10_p,
            "p_method": self.p_method,
            "tests": self.tests,
            "effects": self.effects,
            "details": self.details,
            "structure": self.structure,
            "layers": [x.as_dict() for x in self.layers],
            "tensors": [x.as_dict() for x in self.tensors],
            "notes": list(self.notes),
            "probe": self.probe,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Verdict:
        """The verdict as_dict wrote (the lineage verdict cache); raises KeyError, TypeError or
        ValueError on anything else."""
        relation = doc["relation"]
        if relation not in RELATIONS:
            raise ValueError(f"unknown relation {relation!r}")
        return cls(
            reference=str(doc["reference"]),
            relation=relation,
            dependent=bool(doc["dependent"]),
            p_value=None if doc["p_value"] is None else float(doc["p_value"]),
            log10_p=None if doc["log10_p"] is None else float(doc["log10_p"]),
            p_method=str(doc["p_method"]),
            tests=int(doc["tests"]),
            effects={str(k): float(v) for k, v in doc["effects"].items()},
            details=dict(doc["details"]),
            structure=dict(doc["structure"]),
            layers=tuple(LayerEvidence(**x) for x in doc["layers"]),
            tensors=tuple(TensorEvidence(**x) for x in doc["tensors"]),
            notes=tuple(str(n) for n in doc["notes"]),
            probe=doc["probe"],
        )


@dataclasses.dataclass(frozen=True)
class LineageReport:
    candidate: str
    alpha: float
    verdicts: tuple[Verdict, ...]
    problems: tuple[str, ...] = ()
    false_positive_bound: str | None = None

    @property
    def verdict(self) -> str:
        dependent = [v for v in self.verdicts if v.dependent]
        if dependent:
            return "; ".join(f"{v.relation} of {v.reference}" for v in dependent)
        if self.verdicts and all(v.relation == "independent" for v in self.verdicts):
            return "independent of every reference"
        if any(v.relation == "adapter" for v in self.verdicts):
            return "; ".join(
                f"{v.relation} of {v.reference}" for v in self.verdicts if v.relation == "adapter"
            )
        return "inconclusive"

    def as_dict(self) -> dict[str, Any]:
        from gate import __version__

        return {
            "version": 1,
            "tool": {"name": "provenance-gate", "version": __version__},
            "candidate": self.candidate,
            "alpha": self.alpha,
            "verdict": self.verdict,
            "false_positive_bound": self.false_positive_bound,
            "problems": list(self.problems),
            "references": [v.as_dict() for v in self.verdicts],
        }


def format_p(log10_p: float | None) -> str:
    if log10_p is None:
        return "n/a"
    if log10_p <= EXACT_LOG10_P:
        return "= 0, exact match"
    if log10_p > -4:
        return f"= {10**log10_p:.3g}"
    exp = math.floor(log10_p)
    return f"< 1e{exp + 1}" if exp < -300 else f"= {10 ** (log10_p - exp):.1f}e{exp}"
