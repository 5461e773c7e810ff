"""Declared ONNX models: their external data stays beside them and is itself verified, and
operators from outside the standard are said.

An ONNX file can keep its tensors in other files (`external_data`: a location relative to the
model's folder, an offset and a length). Those bytes are the model's weights as much as the
file's own: each location must resolve inside the model's folder (no absolute path, no `..`, no
symlink out), exist, hold the range the model reads, and be a declared artifact, so its SHA-256
is verified like any weight file's. The structure is re-read here (tensor bytes are skipped:
milliseconds even for a large model); a malformed file is already PG313 from its scan.
"""

from __future__ import annotations

import os

from gate import paths, rules
from gate.errors import FormatError
from gate.evidence import Evidence, norm
from gate.findings import Finding, Location
from gate.formats import onnx
from gate.formats.onnx import OnnxHeader
from gate.hashing import FileScan


def check(ev: Evidence) -> list[Finding]:
    out: list[Finding] = []
    declared = ev.declared
    scans = {
        norm(d.path): done.scan
        for d, done in zip(ev.manifest.artifacts, ev.artifacts, strict=True)
        if done is not None
    }
    for decl, done in zip(ev.manifest.artifacts, ev.artifacts, strict=True):
        if done is None or done.scan is None:
            continue
        scan = done.scan
        if scan.format != "onnx" or scan.pointer is not None or scan.header_error is not None:
            continue
        real, problem = paths.resolve_inside(ev.target.root, decl.path)
        if problem is not None:
            continue  # PG202 from the artifact check
        try:
            header = onnx.read(real)
        except (OSError, FormatError):
            continue  # changed since its scan: the next run's scan says how
        at = ev.manifest.locate("artifacts", decl.index, "path")
        out += _external(ev.target.root, decl.path, real, header, at, declared, scans)
        out += _custom(decl.path, header, at)
    return out


def _external(
    root: str,
    rel: str,
    real: str,
    header: OnnxHeader,
    at: Location,
    declared: frozenset[str],
    scans: dict[str, FileScan | None],
) -> list[Finding]:
    """PG314 for each external data file the model cannot safely and verifiably read."""
    folder = os.path.dirname(real)
    out: list[Finding] = []
    for location in header.external_files:
        tensors = [t for t in header.tensors if t.external and t.external.location == location]
        target, problem = paths.resolve_inside(folder, location)
        where = os.path.relpath(target, root).replace(os.sep, "/") if target else location
        if problem is None and not os.path.isfile(target):
            problem = "no such file"
        if problem is None and where not in declared:
            problem = "not a declared artifact: its bytes are verified by no sha256"
        scan = scans.get(where)
        pointer = scan is not None and scan.pointer is not None
        if problem is None and not pointer:
            size = os.path.getsize(target)
            short = [
                t.name
                for t in tensors
                if t.external is not None
                and t.external.offset + (t.external.length or t.nbytes or 0) > size
            ]
            if short:
                problem = (
                    f"{len(short)} tensor(s) read past its end ({size} bytes), e.g. {short[0]}"
                )
        if problem is None:
            continue
        out.append(
            rules.PG314.finding(
                at,
                f"{rel}: external data {location!r} ({len(tensors)} tensor(s)): {problem}",
                declared=f"external data {location!r} beside {rel}",
                found=problem,
                details=tuple(t.name for t in tensors[:8]),
            )
        )
    return out


def _custom(rel: str, header: OnnxHeader, at: Location) -> list[Finding]:
    custom = header.custom_domains
    if not custom and not header.functions:
        return []
    parts = [f"{d or '(default)'} ({header.domains[d]} node(s))" for d in custom]
    if header.functions:
        parts.append(f"{len(header.functions)} model-local function(s)")
    return [
        rules.PG315.finding(
            at,
            f"{rel}: operators outside the ONNX standard: {', '.join(parts)}",
            declared="standard ONNX operators",
            found=", ".join(custom + list(header.functions)),
            details=tuple(header.functions[:8]),
        )
    ]
