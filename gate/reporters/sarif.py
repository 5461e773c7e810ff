"""SARIF 2.1.0 for GitHub code scanning: one rule per rule id, one result per finding."""

from __future__ import annotations

from typing import Any

from gate import REPOSITORY_URL, RULES_URL, rules
from gate.findings import Report
from gate.reporters.common import finding_text, repo_path
from gate.reporters.interface import ReporterOptions
from gate.text import json_document

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_FIX = (
    "How to fix: each result says what was declared, what was found and, on its last line, the"
    " change that resolves it (`hint:`). Rule table: " + RULES_URL
)
_FIX_MD = (
    "**How to fix:** each result says what was declared, what was found and, on its last line,"
    f" the change that resolves it (`hint:`). See the [rule table]({RULES_URL})."
)


class SarifReporter:
    def __init__(self, options: ReporterOptions) -> None:
        self.options = options

    def render(self, report: Report) -> str:
        ids = list(rules.RULES)
        driver_rules = [
            {
                "id": r.id,
                "name": r.name,
                "shortDescription": {"text": r.summary},
                "defaultConfiguration": {"level": r.severity},
                "help": {"text": f"{r.summary} {_FIX}", "markdown": f"{r.summary}\n\n{_FIX_MD}"},
                "helpUri": RULES_URL,
            }
            for r in rules.RULES.values()
        ]
        results: list[dict[str, Any]] = []
        for f in report.sorted_findings():
            text = finding_text(f)  # with its hint: code scanning shows the message
            result: dict[str, Any] = {
                "ruleId": f.rule,
                "ruleIndex": ids.index(f.rule),
                "level": f.severity,
                "message": {"text": text},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {
                                "uri": repo_path(report, f.location.path, self.options.workspace)
                            },
                            "region": {
                                "startLine": f.location.line,
                                "startColumn": f.location.column,
                            },
                        }
                    }
                ],
            }
            if f.hint:
                result["properties"] = {"hint": f.hint}
            results.append(result)
        doc = {
            "$schema": SCHEMA,
            "version": "2.1.0",
            "runs": [
                {
                    "tool": {
                        "driver": {
                            "name": "provenance-gate",
                            "version": report.tool_version,
                            "informationUri": REPOSITORY_URL,
                            "rules": driver_rules,
                        }
                    },
                    "results": results,
                }
            ],
        }
        return json_document(doc)
