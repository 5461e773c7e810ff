"""Result values: every check returns these; every reporter renders them."""

from __future__ import annotations

import dataclasses
from typing import Literal

Severity = Literal["error", "warning", "note"]
FailOn = Literal["error", "warning", "note", "never"]
Verdict = Literal["pass", "fail"]
Method = Literal["content", "lfs-pointer", "none"]

SEVERITY_RANK: dict[str, int] = {"note": 0, "warning": 1, "error": 2, "never": 3}


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a finding points: a file relative to the repository root, 1-based line and column."""

    path: str
    line: int = 1
    column: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem (or one thing not checked), with what was declared and what was found."""

    rule: str
    severity: Severity
    message: str
    location: Location
    declared: str | None = None
    found: str | None = None
    hint: str | None = None
    details: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ArtifactResult:
    """How one declared artifact was verified."""

    path: str
    format: str
    method: Method  # content: bytes hashed; lfs-pointer: content not read; none: not verified
    ok: bool
    size: int | None = None
    sha256: str | None = None
    blake3: str | None = None  # of the whole file, when the signature check computed it


@dataclasses.dataclass(frozen=True)
class BaseLineage:
    """One declared base model and what the weights showed about it (a BOM's pedigree)."""

    name: str  # the Hub id (owner/name) or the repository folder
    relation: str  # as declared
    hub: bool
    revision: str | None = None
    license: str | None = None
    found: str | None = None  # the relation the weights show; None: not established
    log10_p: float | None = None  # corrected for every test; <= -1e9 stands for p = 0
    exact: bool = False  # settled by identical digests (tensors or whole files)
    summary: str | None = None  # what was found, or why nothing was (None: not checked)


@dataclasses.dataclass(frozen=True)
class Report:
    """The outcome of one run of a command over one repository."""

    tool_version: str
    root: str
    manifest: str
    findings: tuple[Finding, ...]
    artifacts: tuple[ArtifactResult, ...] = ()
    fail_on: FailOn = "error"
    manifest_invalid: bool = False
    nothing_to_check: bool = False
    model_name: str | None = None  # the manifest's model.name (None: the manifest is invalid)
    manifest_sha256: str | None = None  # of the manifest's bytes: the policy a verdict applied
    # the declarations a bill of materials carries (reporters/cyclonedx.py)
    license: str | None = None
    license_name: str | None = None
    license_link: str | None = None
    card: str | None = None  # the model card's path, relative to the root
    bases: tuple[BaseLineage, ...] = ()

    @property
    def verdict(self) -> Verdict:
        """`fail` when the manifest is invalid or any finding reaches the --fail-on severity."""
        if self.manifest_invalid:
            return "fail"
        threshold = SEVERITY_RANK[self.fail_on]
        if any(SEVERITY_RANK[f.severity] >= threshold for f in self.findings):
            return "fail"
        return "pass"

    @property
    def exit_code(self) -> int:
        """The process exit code this report calls for (see errors.ExitCode)."""
        from gate.errors import ExitCode

        if self.manifest_invalid:
            return int(ExitCode.USAGE)
        if self.verdict == "fail":
            return int(ExitCode.FAILED)
        if self.nothing_to_check:
            return int(ExitCode.NOTHING)
        return int(ExitCode.PASS)

    def counts(self) -> dict[str, int]:
        """Number of findings per severity."""
        out = {"error": 0, "warning": 0, "note": 0}
        for f in self.findings:
            out[f.severity] += 1
        return out

    def sorted_findings(self) -> list[Finding]:
        """Errors first, then warnings, then notes; each by location."""
        return sorted(
            self.findings,
            key=lambda f: (-SEVERITY_RANK[f.severity], f.location.path, f.location.line, f.rule),
        )
