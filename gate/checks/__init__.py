"""`check`: gather the evidence once, run every check of the catalogue on it, build the Report.

A check is a function Evidence -> list[Finding] (pre-commit's all_languages table is the model):
it reads, never writes, and returns what it found. The order of `catalogue.CHECKS` is the order
of the report's findings, except the Hub's: they come last, one per Hub model however many
checks met it (gate/hubmodels.once_per_model). The check modules load only once the manifest's
files are being read (their imports then overlap the reads).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from gate import __version__, rules
from gate.evidence import Options, Target, gather, load_manifest, norm, prefetch
from gate.findings import ArtifactResult, BaseLineage, FailOn, Finding, Report
from gate.scanner import Scanner

if TYPE_CHECKING:
    from gate.hubclient import Hub

__all__ = ["Options", "Target", "check", "report"]


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
    try:
        # the declared files are read while the manifest is validated and the checks set up
        manifest, problems = load_manifest(target, scanner.cache, prefetch(target, scanner))
        if manifest is None:
            return report(target, problems, (), options.fail_on, manifest_invalid=True)
        from gate import hubmodels
        from gate.checks.catalogue import CHECKS

        ev = gather(target, manifest, options, scanner, connect)
    finally:
        scanner.cancel()  # reads nobody claimed: the manifest was invalid, or something failed
    findings = hubmodels.once_per_model([f for c in CHECKS for f in c.run(ev)])
    nothing = not manifest.artifacts and not any(f.rule == "PG206" for f in findings)
    if options.strict:
        findings = [rules.strict(f) for f in findings]
    results = tuple(
        dataclasses.replace(done.result, blake3=ev.blake3.get(norm(done.result.path)))
        for done in ev.artifacts
        if done is not None
    )
    done = report(target, findings, results, options.fail_on, nothing_to_check=nothing)
    return dataclasses.replace(
        done,
        model_name=manifest.name,
        manifest_sha256=_sha256_of(target.manifest_path),
        license=manifest.license,
        license_name=manifest.license_name,
        license_link=manifest.license_link,
        card=manifest.card,
        bases=tuple(
            ev.lineage.get(i)
            or BaseLineage(b.name, b.relation, b.id is not None, b.revision, b.license)
            for i, b in enumerate(manifest.base_models)
        ),
    )


def _sha256_of(path: str) -> str | None:
    import hashlib

    from gate import paths

    try:
        with paths.open_regular(path) as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


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
