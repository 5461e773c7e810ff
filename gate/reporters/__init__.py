"""Reporters: one module per output format, all rendering the same Report."""

from __future__ import annotations

from gate.reporters.interface import Reporter, ReporterOptions


def get(name: str, options: ReporterOptions) -> Reporter:
    """The reporter registered under name (a key of FORMATS)."""
    from gate.reporters import cyclonedx, github, intoto, json_, markdown, sarif, text

    registry: dict[str, type[Reporter]] = {
        "text": text.TextReporter,
        "json": json_.JsonReporter,
        "github": github.GithubReporter,
        "sarif": sarif.SarifReporter,
        "markdown": markdown.MarkdownReporter,
        "intoto": intoto.IntotoReporter,
        "cyclonedx": cyclonedx.CyclonedxReporter,
        "cyclonedx-1.7": cyclonedx.Cyclonedx17Reporter,
    }
    return registry[name](options)


FORMATS = ("text", "json", "github", "sarif", "markdown", "intoto", "cyclonedx", "cyclonedx-1.7")

__all__ = ["FORMATS", "Reporter", "ReporterOptions", "get"]
