"""Helpers shared by reporters: report -> plain data, paths relative to a workspace."""

from __future__ import annotations

import os
from typing import Any

from gate import rules
from gate.findings import Finding, Report


def repo_path(report: Report, rel: str, workspace: str | None) -> str:
    """A finding's path relative to the workspace (default: as stored, relative to the root)."""
    if workspace is None or os.path.isabs(rel):
        return rel
    full = os.path.join(report.root, rel)
    out = os.path.relpath(full, os.path.realpath(workspace))
    return out.replace(os.sep, "/")


def finding_dict(f: Finding) -> dict[str, Any]:
    return {
        "rule": f.rule,
        "name": rules.RULES[f.rule].name,
        "severity": f.severity,
        "message": f.message,
        "location": {"path": f.location.path, "line": f.location.line, "column": f.location.column},
        "declared": f.declared,
        "found": f.found,
        "hint": f.hint,
        "details": list(f.details),
    }


def report_dict(report: Report) -> dict[str, Any]:
    """The versioned JSON document (schemas/report.v1.schema.json)."""
    counts = report.counts()
    return {
        "report_version": 1,
        "tool": {"name": "provenance-gate", "version": report.tool_version},
        "verdict": report.verdict,
        "exit_code": report.exit_code,
        "fail_on": report.fail_on,
        "root": report.root,
        "manifest": report.manifest,
        "summary": {
            **counts,
            "artifacts": len(report.artifacts),
            "content_verified": sum(a.method == "content" and a.ok for a in report.artifacts),
            "pointer_verified": sum(a.method == "lfs-pointer" and a.ok for a in report.artifacts),
        },
        "findings": [finding_dict(f) for f in report.sorted_findings()],
        "artifacts": [
            {
                "path": a.path,
                "format": a.format,
                "method": a.method,
                "ok": a.ok,
                "size": a.size,
                "sha256": a.sha256,
            }
            for a in report.artifacts
        ],
    }


def finding_text(f: Finding, *, hint: bool = True) -> str:
    """A finding as plain multi-line text: message, declared, found, details, hint."""
    lines = [f.message]
    if f.declared is not None:
        lines.append(f"declared: {f.declared}")
    if f.found is not None:
        lines.append(f"found: {f.found}")
    lines.extend(f.details)
    if hint and f.hint:
        lines.append(f"hint: {f.hint}")
    return "\n".join(lines)


def summary_line(report: Report) -> str:
    c = report.counts()
    arts = report.artifacts
    pointers = sum(a.method == "lfs-pointer" for a in arts)
    parts = [f"{c['error']} error(s), {c['warning']} warning(s), {c['note']} note(s)"]
    parts.append(f"{len(arts)} artifact(s) checked")
    if pointers:
        parts.append(f"{pointers} from LFS pointers (content not read)")
    return f"{report.verdict.upper()}: " + "; ".join(parts)
