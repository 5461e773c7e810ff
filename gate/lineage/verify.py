"""Check the manifest's lineage claims with the evidence tiers this release implements."""

from __future__ import annotations

from collections.abc import Sequence

from gate import hashing, rules
from gate.findings import Finding, Severity
from gate.lineage import exact
from gate.manifest import BaseModel, Manifest
from gate.scanner import Scanner

_LATER = "similarity tiers (fine-tunes, quantization, permutation) are not implemented yet"


def check(
    root: str,
    manifest: Manifest,
    scans: dict[str, hashing.FileScan],
    scanner: Scanner,
    extra: Sequence[hashing.TensorDigest] = (),
    unread: Sequence[str] = (),
) -> list[Finding]:
    """Findings for the scratch claim and for each declared base model.

    extra: tensors read from other formats (torch checkpoints); unread: weight files whose
    tensors could not be read, with the reason (the evidence is then partial, and says so).
    """
    candidate = [t for s in scans.values() if s.tensors for t in s.tensors] + list(extra)
    missing = [p for p, s in scans.items() if s.tensors is None and s.format == "safetensors"]
    gaps = [f"{p}: not readable as tensors" for p in sorted(missing)] + list(unread)
    unverified: Severity = "error" if manifest.policy.lineage_strict else "note"
    if not candidate:
        why = "no tensors to compare" + (f" ({'; '.join(gaps)})" if gaps else "")
        return [_not_checked(manifest, why, unverified)]
    out: list[Finding] = []
    if gaps:
        out.append(_not_checked(manifest, "evidence is partial: " + "; ".join(gaps), unverified))
    if manifest.origin == "scratch":
        return out + _scratch(root, manifest, candidate, unverified, scanner)
    for i, base in enumerate(manifest.base_models):
        out.extend(_base(root, manifest, i, base, candidate, unverified, scanner))
    return out


def _not_checked(manifest: Manifest, why: str, severity: Severity) -> Finding:
    return rules.make(
        "PG501",
        f"lineage not checked: {why}",
        manifest.locate("model", "origin"),
        declared=f"origin: {manifest.origin}",
        found=f"not checked: {why}",
        severity=severity,
    )


def _scratch(
    root: str,
    manifest: Manifest,
    candidate: list[hashing.TensorDigest],
    unverified: Severity,
    scanner: Scanner,
) -> list[Finding]:
    at = manifest.locate("model", "origin")
    refs = manifest.policy.references
    if not refs:
        return [
            _not_checked(
                manifest,
                "the `scratch` claim was not tested: no reference models are listed in"
                " policy.lineage.references",
                unverified,
            )
        ]
    out: list[Finding] = []
    for ref in refs:
        tensors, problems = exact.collect(root, ref, scanner)
        if not tensors:
            out.append(
                _not_checked(
                    manifest, f"reference {ref} unreadable: {'; '.join(problems)}", unverified
                )
            )
            continue
        ev = exact.compare(candidate, tensors, ref)
        if ev.matched:
            out.append(
                rules.make(
                    "PG502",
                    f"origin `scratch` is contradicted by the weights: {ev.summary()}",
                    at,
                    declared="origin: scratch (no base model)",
                    found=ev.summary(),
                    details=ev.detail_lines(),
                    hint=f"declare `origin: derived` with base_models: [{{path: {ref}, relation:"
                    f" {'copy' if ev.all_matched else 'merge'}}}] and the base model's license",
                )
            )
        else:
            out.append(
                rules.make(
                    "PG501",
                    f"no tensor is bit-identical to {ref}; {_LATER}, so independence from it"
                    " is not established",
                    at,
                    declared="origin: scratch",
                    found=f"0 of {ev.candidate_tensors} weight tensors identical to {ref}",
                    severity=unverified,
                )
            )
    return out


def _base(
    root: str,
    manifest: Manifest,
    i: int,
    base: BaseModel,
    candidate: list[hashing.TensorDigest],
    unverified: Severity,
    scanner: Scanner,
) -> list[Finding]:
    at = manifest.locate("base_models", i)
    declared = f"{base.relation} of {base.name}"
    if base.path is None:
        return [
            rules.make(
                "PG501",
                f"{base.name}: Hub base models are not fetched by this version; relation"
                f" `{base.relation}` not verified",
                at,
                declared=declared,
                found="not checked: Hub access not implemented",
                severity=unverified,
            )
        ]
    tensors, problems = exact.collect(root, base.path, scanner)
    if not tensors:
        return [
            rules.make(
                "PG501",
                f"{base.name}: base weights unusable ({'; '.join(problems)}); relation not checked",
                at,
                declared=declared,
                found="not checked",
                severity=unverified,
            )
        ]
    ev = exact.compare(candidate, tensors, base.name)
    if base.relation == "copy":
        if ev.all_matched:
            return []
        return [
            rules.make(
                "PG503",
                f"declared a copy of {base.name}, but only {ev.summary()}",
                at,
                declared=declared,
                found=ev.summary(),
                details=ev.detail_lines(),
                hint="declare the relation that describes how the weights were changed",
            )
        ]
    if ev.all_matched:
        return [
            rules.make(
                "PG504",
                f"declared `{base.relation}`, but every weight tensor is bit-identical to"
                f" {base.name}: this is a copy",
                at,
                declared=declared,
                found=ev.summary(),
                hint="declare `relation: copy`, or ship the changed weights",
            )
        ]
    return [
        rules.make(
            "PG501",
            f"{base.name}: relation `{base.relation}` not verified: {ev.summary()}; {_LATER}",
            at,
            declared=declared,
            found=f"not checked beyond tier 0: {ev.summary()}",
            severity=unverified,
        )
    ]
