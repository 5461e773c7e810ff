"""The reporter seam."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from gate.findings import Report


@dataclasses.dataclass(frozen=True)
class ReporterOptions:
    color: bool = False
    # Folder that annotation and SARIF paths are made relative to (GITHUB_WORKSPACE in CI).
    workspace: str | None = None


class Reporter(Protocol):
    def __init__(self, options: ReporterOptions) -> None: ...

    def render(self, report: Report) -> str:
        """The whole output for one report, ending with a newline."""
        ...
