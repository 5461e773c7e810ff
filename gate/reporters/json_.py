"""JSON: the versioned machine-readable report (schema: schemas/report.v1.schema.json)."""

from __future__ import annotations

from gate.findings import Report
from gate.reporters.common import report_dict
from gate.reporters.interface import ReporterOptions
from gate.text import json_document


class JsonReporter:
    def __init__(self, options: ReporterOptions) -> None:
        self.options = options

    def render(self, report: Report) -> str:
        return json_document(report_dict(report))
