"""Human text, one block per finding (`path:line:col: severity RULE name: message`)."""

from __future__ import annotations

from gate import rules
from gate.findings import Report
from gate.reporters.common import summary_line
from gate.reporters.interface import ReporterOptions
from gate.text import no_commands, one_line

_COLORS = {"error": "31", "warning": "33", "note": "36", "pass": "32", "fail": "31"}


class TextReporter:
    def __init__(self, options: ReporterOptions) -> None:
        self.options = options

    def _c(self, key: str, text: str) -> str:
        return f"\x1b[{_COLORS[key]};1m{text}\x1b[0m" if self.options.color else text

    def render(self, report: Report) -> str:
        lines: list[str] = []
        for f in report.sorted_findings():
            # Names come from the repository: controls and bidirectional overrides are shown
            # escaped, and a value never starts a line of its own.
            name = rules.RULES[f.rule].name
            lines.append(
                f"{one_line(str(f.location))}: {self._c(f.severity, f.severity)} {f.rule} {name}:"
                f" {one_line(f.message)}"
            )
            if f.declared is not None:
                lines.append(f"    declared: {one_line(f.declared)}")
            if f.found is not None:
                lines.append(f"    found:    {one_line(f.found)}")
            lines.extend(f"      {one_line(d)}" for d in f.details)
            if f.hint:
                lines.append(f"    hint: {one_line(f.hint)}")
        summary = summary_line(report)
        lines.append(
            self._c(report.verdict, summary.split(":", 1)[0]) + ":" + summary.split(":", 1)[1]
        )
        return no_commands("\n".join(lines) + "\n")
