"""in-toto: the verdict as an in-toto Statement v1 with a SLSA verification summary (VSA v1).

Subjects: every declared file whose content (or LFS pointer) was read, by its SHA-256, and the
model as OpenSSF Model Signing names it: the SHA-256 over the files' raw SHA-256 digests in path
order (model_signing sorts its manifest items by path, component by component; the digest equals
a `model.sig`'s subject when the manifest declares every file the signature covers). The model
subject carries the rule ids that failed and the exit code as annotations (a VSA has no field for
them). The predicate names the verifier and its version, the time, the policy (the manifest, by
its SHA-256), PASSED or FAILED, and `verifiedLevels` (`FAILED`, or this gate's own level name:
VSA reserves the `SLSA_` prefix for SLSA's tracks). GitHub's `actions/attest` signs and publishes
it (the Action's `attest` input; see README).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pathlib
from typing import Any

from gate.findings import Report
from gate.reporters.interface import ReporterOptions

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/verification_summary/v1"
VERIFIER_ID = "https://github.com/provenance-gate/provenance-gate"
PASSED_LEVEL = "PROVENANCE_GATE_VERIFIED"


def model_digest(files: dict[str, str]) -> str:
    """OpenSSF Model Signing's model digest: SHA-256 over each file's raw SHA-256, the files in
    the order of their paths compared component by component (as model_signing sorts them)."""
    h = hashlib.sha256()
    for path in sorted(files, key=lambda p: pathlib.PurePosixPath(p).parts):
        h.update(bytes.fromhex(files[path]))
    return h.hexdigest()


def statement(report: Report, now: datetime.datetime | None = None) -> dict[str, Any]:
    files = {a.path: a.sha256 for a in report.artifacts if a.sha256}
    failed = sorted({f.rule for f in report.findings if f.severity == "error"})
    passed = report.verdict == "pass"
    subjects: list[dict[str, Any]] = [
        {"name": path, "digest": {"sha256": sha}} for path, sha in sorted(files.items())
    ]
    name = report.model_name or "model"
    subjects.append(
        {
            "name": name,
            "digest": {"sha256": model_digest(files)},
            "annotations": {
                "provenance-gate.kind": "model (OpenSSF Model Signing digest)",
                "provenance-gate.failedRules": failed,
                "provenance-gate.exitCode": report.exit_code,
            },
        }
    )
    when = (now or datetime.datetime.now(datetime.timezone.utc)).replace(microsecond=0)
    policy: dict[str, Any] = {"uri": report.manifest}
    if report.manifest_sha256:
        policy["digest"] = {"sha256": report.manifest_sha256}
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "verifier": {"id": VERIFIER_ID, "version": {"provenance-gate": report.tool_version}},
            "timeVerified": when.isoformat().replace("+00:00", "Z"),
            "resourceUri": name,
            "policy": policy,
            "verificationResult": "PASSED" if passed else "FAILED",
            "verifiedLevels": [PASSED_LEVEL if passed else "FAILED"],
            "slsaVersion": "1.0",
        },
    }


class IntotoReporter:
    def __init__(self, options: ReporterOptions) -> None:
        self.options = options

    def render(self, report: Report) -> str:
        return json.dumps(statement(report), indent=2) + "\n"
