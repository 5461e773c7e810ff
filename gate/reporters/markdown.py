"""Markdown: the table a reviewer reads (also the GitHub job summary)."""

from __future__ import annotations

from gate import rules
from gate.findings import Report
from gate.reporters.common import summary_line
from gate.reporters.interface import ReporterOptions
from gate.text import markdown

_ICON = {"error": "❌", "warning": "⚠️", "note": "ℹ️"}


def _cell(text: str | None) -> str:
    return "" if not text else markdown(text)


class MarkdownReporter:
    def __init__(self, options: ReporterOptions) -> None:
        self.options = options

    def render(self, report: Report) -> str:
        icon = "✅" if report.verdict == "pass" else "❌"
        out = [f"## {icon} provenance-gate: {report.verdict.upper()}", "", summary_line(report), ""]
        findings = report.sorted_findings()
        if findings:
            out += [
                "| | Rule | Location | Finding | Declared | Found |",
                "|---|---|---|---|---|---|",
            ]
            for f in findings:
                message = "<br>".join(_cell(t) for t in (f.message, *f.details))
                if f.hint:
                    message += f"<br>**Fix:** {_cell(f.hint)}"
                out.append(
                    f"| {_ICON[f.severity]} {f.severity} | {f.rule} {rules.RULES[f.rule].name}"
                    f" | {_cell(str(f.location))} | {message} | {_cell(f.declared)}"
                    f" | {_cell(f.found)} |"
                )
            out.append("")
        if report.artifacts:
            out += ["| Artifact | Format | Verified from | Result |", "|---|---|---|---|"]
            for a in report.artifacts:
                how = {
                    "content": "content",
                    "lfs-pointer": "LFS pointer (content not read)",
                    "none": "not verified",
                }[a.method]
                result = "ok" if a.ok else "FAILED"
                out.append(f"| {_cell(a.path)} | {_cell(a.format)} | {how} | {result} |")
            out.append("")
        return "\n".join(out)
