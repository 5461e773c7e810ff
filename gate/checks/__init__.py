"""`check`: gather the evidence once, run every registered check on it, build the Report.

A check is a function Evidence -> list[Finding] (pre-commit's all_languages table is the model):
it reads, never writes, and returns what it found. The order of CHECKS is the order of the
report's findings, except the Hub's: they come last, one per Hub model however many checks met
it (gate/hubmodels.once_per_model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from gate import __version__, hubmodels, rules
from gate.checks import artifacts, declarations, lineage, shards
from gate.evidence import Evidence, Options, Target, gather, load_manifest
from gate.findings import ArtifactResult, FailOn, Finding, Report
from gate.hubclient import Hub
from gate.scanner import Scanner

__all__ = ["CHECKS", "Check", "Options", "Target", "check", "report"]


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Evidence], list[Finding]]
    summary: str


CHECKS: tuple[Check, ...] = (
    Check("artifacts", artifacts.declared, "declared files: digests, formats, pickles, lock"),
    Check("undeclared", artifacts.undeclared, "weight or executable files nobody declared"),
    Check("shards", shards.check, "sharded checkpoint indexes against their shards"),
    Check("lineage", lineage.check, "scratch and base-model claims against the weights"),
    Check("declarations", declarations.check, "licenses, license file, model card, policy"),
)


def check(
    target: Target,
    options: Options | None = None,
    scanner: Scanner | None = None,
    connect: Callable[[], Hub] | None = None,
) -> Report:
    """Run every check; checks not implemented are reported as not checked. connect: how to
    reach the Hub when a Hub model needs it (None: not reachable; the CLI passes a client
    built from its settings)."""
    options = options or Options()
    scanner = scanner or Scanner()
    manifest, problems = load_manifest(target, scanner.cache)
    if manifest is None:
        return report(target, problems, (), options.fail_on, manifest_invalid=True)
    ev = gather(target, manifest, options, scanner, connect)
    findings = hubmodels.once_per_model([f for c in CHECKS for f in c.run(ev)])
    nothing = not manifest.artifacts and not any(f.rule == "PG206" for f in findings)
    if options.strict:
        findings = [rules.strict(f) for f in findings]
    results = tuple(done.result for done in ev.artifacts if done is not None)
    return report(target, findings, results, options.fail_on, nothing_to_check=nothing)


def report(
    target: Target,
    findings: list[Finding],
    artifacts: tuple[ArtifactResult, ...],
    fail_on: FailOn,
    *,
    manifest_invalid: bool = False,
    nothing_to_check: bool = False,
) -> Report:
    """The Report of one run over one repository."""
    return Report(
        tool_version=__version__,
        root=target.root,
        manifest=target.manifest_display,
        findings=tuple(findings),
        artifacts=artifacts,
        fail_on=fail_on,
        manifest_invalid=manifest_invalid,
        nothing_to_check=nothing_to_check,
    )
