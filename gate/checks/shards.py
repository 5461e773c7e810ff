"""Sharded safetensors checkpoints: the index names exactly the shards present, each tensor once."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

from gate import hashing, lfs, paths, rules
from gate.errors import FormatError, GateError
from gate.evidence import Evidence, in_folders, norm
from gate.findings import Finding, Location
from gate.formats.registry import INDEX_SUFFIX
from gate.formats.safetensors import strict_json

MAX_INDEX_BYTES = 64 << 20  # a weight map for 100k tensors is a few MB
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<i>\d+)-of-(?P<n>\d+)\.safetensors$")

HeaderSource = Callable[[str], "set[str] | str"]  # a shard's tensor names, or why not known
LineOf = Callable[[str], Location]


def is_index(rel: str) -> bool:
    return rel.endswith(INDEX_SUFFIX)


def check_index(root: str, rel: str, files: set[str], headers: HeaderSource) -> list[Finding]:
    """Findings for one index file; headers(rel) gives a shard's header or why it is unreadable."""
    real, problem = paths.resolve_inside(root, rel)
    if problem is not None:
        return [
            rules.PG202.finding(Location(rel), f"{rel}: {problem}", declared=rel, found=problem)
        ]
    try:
        with paths.open_regular(real) as f:
            data = paths.read_capped(f, MAX_INDEX_BYTES)
        if len(data) > MAX_INDEX_BYTES:
            raise FormatError(f"index is over the {MAX_INDEX_BYTES}-byte limit")
        text = data.decode("utf-8")
        doc = strict_json(text)
        weight_map = _weight_map(doc)
    except (OSError, UnicodeDecodeError, FormatError) as e:
        msg = e.message if isinstance(e, FormatError) else str(e)
        return [
            rules.PG221.finding(Location(rel), f"{rel}: {msg}", declared="a valid index", found=msg)
        ]

    def line_of(needle: str) -> Location:
        pos = text.find(json.dumps(needle, ensure_ascii=False))
        return Location(rel, text.count("\n", 0, pos) + 1 if pos >= 0 else 1)

    folder = rel[: -len(os.path.basename(rel))]
    out: list[Finding] = []
    named = sorted(set(weight_map.values()))
    for shard in named:
        if "/" in shard or shard in ("", ".", ".."):
            out.append(
                rules.PG202.finding(
                    line_of(shard),
                    f"{rel}: shard name {shard!r} must be a file in the index's folder",
                    declared=shard,
                    found="path outside the folder",
                )
            )
        elif folder + shard not in files:
            out.append(
                rules.PG222.finding(
                    line_of(shard),
                    f"{rel}: names shard {shard} which is not present",
                    declared=shard,
                    found="no such file",
                )
            )
    stem = os.path.basename(rel)[: -len(INDEX_SUFFIX)]
    totals = set()
    for shard in named:
        m = _SHARD.match(shard)
        if m:
            totals.add(int(m.group("n")))
    for total in totals:
        if sum(1 for s in named if (m := _SHARD.match(s)) and int(m.group("n")) == total) != total:
            out.append(
                rules.PG222.finding(
                    Location(rel),
                    f"{rel}: shards are numbered `-of-{total:05d}`; the index names {len(named)}",
                    declared=f"{total} shards",
                    found=f"{len(named)} named",
                )
            )
    for present in sorted(files):
        if not present.startswith(folder) or "/" in present[len(folder) :]:
            continue
        name = present[len(folder) :]
        m = _SHARD.match(name)
        if m and m.group("stem") == stem and name not in weight_map.values():
            out.append(
                rules.PG223.finding(
                    Location(rel),
                    f"{rel}: shard {name} is present but the index does not name it",
                    declared="not in weight_map",
                    found=name,
                )
            )
    out.extend(_tensor_findings(rel, folder, weight_map, named, files, headers, line_of))
    return out


def _weight_map(doc: Any) -> dict[str, str]:
    if not isinstance(doc, dict) or not isinstance(doc.get("weight_map"), dict):
        raise FormatError("expected an object with a `weight_map` object")
    wm: dict[str, str] = doc["weight_map"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
        raise FormatError("`weight_map` must map tensor names to shard file names")
    return wm


def _tensor_findings(
    rel: str,
    folder: str,
    weight_map: dict[str, str],
    named: list[str],
    files: set[str],
    headers: HeaderSource,
    line_of: LineOf,
) -> list[Finding]:
    out: list[Finding] = []
    seen: dict[str, str] = {}
    for shard in named:
        if "/" in shard or folder + shard not in files:
            continue
        header = headers(folder + shard)
        if isinstance(header, str):
            out.append(
                rules.PG225.finding(
                    line_of(shard),
                    f"{rel}: shard {shard} not inspected: {header}",
                    declared=shard,
                    found=f"not checked: {header}",
                )
            )
            continue
        present = header
        for name in sorted(present):
            if name in seen:
                out.append(
                    rules.PG224.finding(
                        line_of(name),
                        f"tensor {name} is stored in both {seen[name]} and {shard}",
                        declared=f"weight_map: {weight_map.get(name)}",
                        found=f"{seen[name]} and {shard}",
                    )
                )
            seen[name] = shard
            if weight_map.get(name) != shard:
                where = weight_map.get(name)
                says = f"maps it to {where}" if where else "does not list it"
                out.append(
                    rules.PG224.finding(
                        line_of(name),
                        f"tensor {name} is in {shard} but the index {says}",
                        declared=f"weight_map: {where}",
                        found=shard,
                    )
                )
        for name, target in weight_map.items():
            if target == shard and name not in present:
                out.append(
                    rules.PG224.finding(
                        line_of(name),
                        f"the index maps {name} to {shard}, which does not contain it",
                        declared=f"weight_map: {shard}",
                        found="not in the shard's header",
                    )
                )
    return out


def check(ev: Evidence) -> list[Finding]:
    """Every sharded checkpoint index (outside base and reference folders, not ignored)."""
    files = {f for f in ev.files if not in_folders(f, ev.folders)}
    ignored = paths.GlobSet(ev.manifest.ignore)
    scans = {
        norm(a.path): done.scan
        for a, done in zip(ev.manifest.artifacts, ev.artifacts, strict=True)
        if done is not None and done.scan is not None
    }
    out: list[Finding] = []
    for rel in sorted(f for f in files if is_index(f)):
        if not ignored.match(rel):
            out.extend(check_index(ev.target.root, rel, files, _headers(ev.target.root, scans)))
    return out


def _headers(root: str, scans: dict[str, hashing.FileScan]) -> HeaderSource:
    def header(rel: str) -> set[str] | str:
        scan = scans.get(rel)
        if scan is not None and scan.pointer is not None:
            return "it is a Git LFS pointer (content not checked out)"
        if scan is not None and scan.tensors is not None:
            return {t.name for t in scan.tensors}  # already read: no second read
        real, problem = paths.resolve_inside(root, rel)
        if problem is not None:
            return problem
        try:
            with paths.open_regular(real) as f:
                if lfs.looks_like_pointer(f.read(len("version https://")) or b""):
                    return "it is a Git LFS pointer (content not checked out)"
            return {t.name for t in hashing.read_safetensors_header(real).tensors}
        except OSError as e:
            return f"cannot be read: {e.strerror}"
        except GateError as e:
            return f"invalid header: {e.message}"

    return header
