"""The lineage report as text, JSON (schemas/lineage.v1.schema.json) or Markdown."""

from __future__ import annotations

from typing import Any

from gate.lineage.result import LineageReport, Verdict, format_p
from gate.text import json_document, markdown, no_commands, visible

FORMATS = ("text", "json", "markdown")
TOP_TENSORS = 8


def render(report: LineageReport, fmt: str) -> str:
    if fmt == "json":
        return json_document(report.as_dict(), ensure_ascii=True, allow_nan=False)
    if fmt == "markdown":
        return _markdown(report)
    return no_commands(visible(_text(report)))


def _strongest(v: Verdict) -> list[str]:
    rows = sorted(v.tensors, key=lambda e: e.log10_p)[:TOP_TENSORS]
    return [
        f"{e.candidate} ~ {e.reference}: {e.test}"
        + (f" ({e.orientation}{', rotated' if e.rotated else ''})" if e.test != "exact" else "")
        + f", |cos| {e.effect:.4f} vs {e.null_effect:.4f} by chance, p {format_p(e.log10_p)}"
        for e in rows
    ]


def probe_line(probe: dict[str, Any]) -> str:
    null = probe["null"]
    calib = (
        f"empirical p = {probe['p_value']:.3g} against {null['pairs']} independent"
        f" {null['architecture']} pairs (their centred cosine: max {null['max_cosine']:.4f})"
        if probe["p_value"] is not None
        else f"not calibrated for {null['architecture']}"
    )
    return (
        f"logit probe (set v{probe['probe_version']}): centred cosine {probe['cosine']:.4f},"
        f" top-1 {probe['top1']:.3f}, KL {probe['kl']:.4f} over {probe['positions']} positions;"
        f" {calib}"
    )


def _text(report: LineageReport) -> str:
    lines = [f"candidate: {report.candidate}", f"verdict:   {report.verdict}"]
    for v in report.verdicts:
        lines.append("")
        lines.append(f"{v.reference}: {v.relation.upper()}")
        p = format_p(v.log10_p)
        lines.append(f"  p {p} ({v.p_method})" if v.log10_p is not None else f"  p: {v.p_method}")
        if v.details.get("summary"):
            lines.append(f"  {v.details['summary']}")
        eff = ", ".join(f"{k} {x}" for k, x in v.effects.items())
        if eff:
            lines.append(f"  effects: {eff}")
        if v.layers:
            lines.append("  per layer:")
            for row in v.layers:
                mapped = "" if row.reference_layer is None else f" <- {row.reference_layer}"
                lines.append(
                    f"    {row.layer:>6}{mapped}: {row.tensors} tensors, {row.exact} exact,"
                    f" mean |cos| {row.mean_effect:.4f} ({row.decided_by}),"
                    f" min p {format_p(row.min_log10_p)}"
                )
        strongest = _strongest(v)
        if strongest:
            lines.append("  strongest evidence:")
            lines += [f"    {s}" for s in strongest]
        if v.probe:
            lines.append(f"  {probe_line(v.probe)}")
        lines += [f"  note: {n}" for n in v.notes]
    lines += [f"problem: {p}" for p in report.problems]
    lines.append("")
    lines.append(
        f"significance level {report.alpha:g}; p-values Bonferroni-corrected over tests"
        " and references"
    )
    if report.false_positive_bound:
        lines.append(f"false positives: {report.false_positive_bound}")
    return "\n".join(lines) + "\n"


def _markdown(report: LineageReport) -> str:
    out = [
        f"## Lineage of {markdown(report.candidate)}",
        "",
        f"**Verdict:** {markdown(report.verdict)}",
        "",
    ]
    out += ["| reference | relation | p | detail |", "|---|---|---|---|"]
    for v in report.verdicts:
        detail = markdown(str(v.details.get("summary", "")))
        out.append(
            f"| {markdown(v.reference)} | **{v.relation}** | {format_p(v.log10_p)} | {detail} |"
        )
    for v in report.verdicts:
        if not v.layers:
            continue
        out += ["", f"### Per layer: {markdown(v.reference)}", ""]
        out += [
            "| layer | from reference layer | tensors | exact | mean \\|cos\\| | min p"
            " | decided by |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in v.layers:
            ref_layer = "" if row.reference_layer is None else str(row.reference_layer)
            out.append(
                f"| {row.layer} | {ref_layer} | {row.tensors} | {row.exact} |"
                f" {row.mean_effect:.4f} | {format_p(row.min_log10_p)} | {row.decided_by} |"
            )
    notes = [
        (v.reference, n)
        for v in report.verdicts
        for n in ([probe_line(v.probe)] if v.probe else []) + list(v.notes)
    ]
    out += [""] + [f"- {markdown(ref)}: {markdown(n)}" for ref, n in notes]
    out += [f"- problem: {markdown(p)}" for p in report.problems]
    out.append(
        f"Significance level {report.alpha:g}, Bonferroni-corrected."
        + (
            f" False positives: {report.false_positive_bound}."
            if report.false_positive_bound
            else ""
        )
    )
    return "\n".join(out) + "\n"
