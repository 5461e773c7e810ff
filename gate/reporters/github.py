"""GitHub Actions workflow commands: one annotation per finding on the manifest line.

GitHub shows at most 10 annotations of each level per step, so errors come first and each level
is capped, the last slot saying how many more are in the job summary.
"""

from __future__ import annotations

from gate import rules
from gate.findings import Finding, Report
from gate.reporters.common import finding_text, repo_path, summary_line
from gate.reporters.interface import ReporterOptions
from gate.text import no_commands, no_legacy_commands, visible

PER_LEVEL_CAP = 10
_LEVEL = {"error": "error", "warning": "warning", "note": "notice"}


def escape_data(text: str) -> str:
    """Workflow-command data: one line, and no legacy `##[` command inside it."""
    out = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return no_legacy_commands(visible(out))


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


class GithubReporter:
    def __init__(self, options: ReporterOptions) -> None:
        self.options = options

    def _line(self, report: Report, f: Finding) -> str:
        path = repo_path(report, f.location.path, self.options.workspace)
        title = f"{f.rule} {rules.RULES[f.rule].name}"
        body = finding_text(f)
        props = (
            f"file={escape_property(path)},line={f.location.line},col={f.location.column},"
            f"title={escape_property(title)}"
        )
        return f"::{_LEVEL[f.severity]} {props}::{escape_data(body)}"

    def render(self, report: Report) -> str:
        out: list[str] = []
        for severity in ("error", "warning", "note"):
            group = [f for f in report.sorted_findings() if f.severity == severity]
            shown = group if len(group) <= PER_LEVEL_CAP else group[: PER_LEVEL_CAP - 1]
            out.extend(self._line(report, f) for f in shown)
            if len(shown) < len(group):
                more = len(group) - len(shown)
                out.append(
                    f"::{_LEVEL[severity]} title=provenance-gate::"
                    f"{more} more {severity} finding(s): see the job summary"
                )
        out.append(no_commands(summary_line(report)))
        return "\n".join(out) + "\n"
