"""The lineage evidence service: open, compare, explain, close (and the logit probe beside).

Both `check` (gate/lineage/claims.py judges the verdicts against the manifest's claims) and the
`lineage` command (gate/lineage/command.py reports them) get their verdicts here, the way
pip-audit's Auditor serves every front end: one place opens Hub models (cached whole, else
sampled with range requests), cuts every model to the same rows when one is a sample, runs the
tiers, says what a sample could not see, and closes every model it was given. The logit probe's
verdict-versus-logits disagreement is said here too, for both.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gate.lineage.result import DEFAULT_ALPHA

if TYPE_CHECKING:
    from gate.findings import Finding
    from gate.hubclient import Hub, HubError
    from gate.lineage.models import Model
    from gate.lineage.probe import ProbeResult
    from gate.lineage.remote import HubRef
    from gate.lineage.result import Verdict
    from gate.scanner import Scanner


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The verdicts against each reference, in order (None: the reference could not be opened),
    what the comparison itself found (a Hub cache copy refused, PG805) and which Hub references
    failed, with the error (None: their weights were unreadable)."""

    candidate: str
    verdicts: tuple[Verdict | None, ...]
    problems: tuple[str, ...]
    findings: tuple[Finding, ...]
    failures: tuple[tuple[HubRef, HubError | None], ...]


def compare(
    candidate: Model,
    references: Sequence[Model | HubRef | None],
    *,
    hub: Hub | None,
    scanner: Scanner,
    alpha: float = DEFAULT_ALPHA,
    exact_matches: dict[str, set[str]] | None = None,
) -> Comparison:
    """Compare the candidate with each reference (a local Model, a Hub model at its commit, or
    None for one that could not be opened). Every model given, and every one opened here, is
    closed before this returns."""
    from gate.lineage import relation, remote
    from gate.lineage.remote import HubRef

    given = [candidate, *(r for r in references if r is not None and not isinstance(r, HubRef))]
    opened: list[Model] = []
    try:
        with tempfile.TemporaryDirectory(prefix="provenance-gate-") as workdir:
            got = remote.open_all(hub, candidate, references, scanner, workdir)
            present = [m for m in got.references if m is not None]
            opened = [m for m in present if all(m is not g for g in given)]
            report = relation.compare(got.candidate, present, alpha, exact_matches=exact_matches)
            explained = iter(remote.explain(got.candidate, report.verdicts))
    finally:
        for m in (*given, *opened):
            m.close()
    verdicts = tuple(next(explained) if m is not None else None for m in got.references)
    return Comparison(
        report.candidate, verdicts, tuple(report.problems), got.findings, got.failures
    )


def disagreement(v: Verdict, got: ProbeResult) -> str | None:
    """What to say when the probe and the weight tiers disagree about dependence."""
    if got.dependent is None or got.dependent == v.dependent:
        return None
    probe_says = "dependent" if got.dependent else "not dependent"
    return (
        f"the probe and the weights disagree: the weights say {v.relation}, the probe says"
        f" {probe_says} (centred cosine {got.cosine:.4f}, empirical p {got.p_value:.3g})"
    )
