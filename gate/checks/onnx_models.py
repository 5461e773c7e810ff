"""Declared ONNX models: their external data stays beside them and is itself verified, and
operators from outside the standard are said.

An ONNX file can keep its tensors in other files (`external_data`: a location relative to the
model's folder, an offset and a length). Those bytes are the model's weights as much as the
file's own: each location must resolve inside the model's folder (no absolute path, no `..`, no
symlink out), exist, hold the range the model reads, and be a declared artifact, so its SHA-256
is verified like any weight file's. The structure is re-read here (tensor bytes are skipped)
and its summary kept in the stat cache; a malformed file is already PG313 from its scan.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from gate import paths, rules
from gate.cache import StatCache, stat_key
from gate.errors import FormatError
from gate.evidence import Evidence, norm
from gate.findings import Finding, Location
from gate.formats import onnx
from gate.formats.onnx import STANDARD_DOMAINS
from gate.hashing import FileScan

# {"external": {location: [[tensor, offset, bytes]]}, "domains": {...}, "functions": [...]}
Summary = dict[str, Any]


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
        summary = _summary(real, ev.scanner.cache)
        if summary is None:
            continue  # changed since its scan: the next run's scan says how
        at = ev.manifest.locate("artifacts", decl.index, "path")
        out += _external(ev.target.root, decl.path, real, summary, at, declared, scans)
        out += _custom(decl.path, summary, at)
    return out


def _summary(real: str, cache: StatCache | None) -> Summary | None:
    """What this check needs of a model's structure, from the stat cache when the file is
    unchanged (a warm check reads no weight file: the structure walk reads megabytes of a
    large export)."""
    try:
        key = stat_key(os.stat(real))
        hit = cache.fact_get("onnx", real, key) if cache is not None else None
        if hit is not None:
            cached: Summary = json.loads(hit)
            return cached
        header = onnx.read(real)
    except (OSError, FormatError, ValueError):
        return None
    external: dict[str, list[list[Any]]] = {}
    for t in header.tensors:
        if t.external is not None:
            size = t.external.length if t.external.length is not None else t.nbytes or 0
            external.setdefault(t.external.location, []).append([t.name, t.external.offset, size])
    summary = {"external": external, "domains": header.domains, "functions": header.functions}
    if cache is not None:
        with contextlib.suppress(OSError):
            if stat_key(os.stat(real)) == key:
                cache.fact_put("onnx", real, key, json.dumps(summary))
    return summary


def _external(
    root: str,
    rel: str,
    real: str,
    summary: Summary,
    at: Location,
    declared: frozenset[str],
    scans: dict[str, FileScan | None],
) -> list[Finding]:
    """PG314 for each external data file the model cannot safely and verifiably read."""
    folder = os.path.dirname(real)
    out: list[Finding] = []
    for location, tensors in sorted(summary["external"].items()):
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
            short = [name for name, offset, length in tensors if offset + length > size]
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
                details=tuple(name for name, _, _ in tensors[:8]),
            )
        )
    return out


def _custom(rel: str, summary: Summary, at: Location) -> list[Finding]:
    domains: dict[str, int] = summary["domains"]
    functions: list[str] = list(summary["functions"])
    custom = sorted(d for d in domains if d not in STANDARD_DOMAINS)
    if not custom and not functions:
        return []
    parts = [f"{d or '(default)'} ({domains[d]} node(s))" for d in custom]
    if functions:
        parts.append(f"{len(functions)} model-local function(s)")
    return [
        rules.PG315.finding(
            at,
            f"{rel}: operators outside the ONNX standard: {', '.join(parts)}",
            declared="standard ONNX operators",
            found=", ".join(custom + functions),
            details=tuple(functions[:8]),
        )
    ]
