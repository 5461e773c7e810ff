"""provenance.lock.json: machine-written per-tensor detail kept beside the hand-written manifest."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from gate import __version__, paths, rules
from gate.errors import FormatError
from gate.findings import Finding, Location
from gate.formats.safetensors import bounded_int
from gate.hashing import FileScan, TensorDigest
from gate.manifest import Memo

LOCK_NAME = "provenance.lock.json"
# Per-tensor digests of a large model fit in tens of MB; a larger lock is hostile or broken.
MAX_LOCK_BYTES = 256 << 20


@dataclasses.dataclass(frozen=True)
class LockedArtifact:
    size: int
    sha256: str
    format: str
    tensors_digest: str | None
    tensors: dict[str, TensorDigest] | None


def lock_path(manifest_path: str) -> str:
    """The lock file that belongs to a manifest: same folder, fixed name."""
    return os.path.join(os.path.dirname(os.path.abspath(manifest_path)), LOCK_NAME)


def _problem(display: str, message: str, line: int, col: int) -> Finding:
    return rules.PG104.finding(
        Location(display, line, col),
        message,
        declared="a lock file written by `provenance-gate lock`",
        found=message,
    )


def read(
    path: str, display: str, memo: Memo | None = None, root: str | None = None
) -> tuple[dict[str, LockedArtifact] | None, Finding | None]:
    """Load a lock file; a missing file is (None, None), a bad one a PG104 finding. root: a lock
    file in this repository that resolves outside it (a symlink) is refused, never read."""

    def bad(message: str, line: int = 1, col: int = 1) -> tuple[None, Finding]:
        return None, _problem(display, message, line, col)

    named = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    real = os.path.realpath(path)
    if root is not None and paths.is_within(named, root) and not paths.is_within(real, root):
        return bad(
            f"the lock file is a symlink resolving outside the repository ({real}); not read"
        )
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return None, None
    if size > MAX_LOCK_BYTES:
        return bad(f"lock file is {size} bytes, over the {MAX_LOCK_BYTES}-byte limit")
    try:
        with paths.open_regular(path) as f:
            data = paths.read_capped(f, MAX_LOCK_BYTES)
    except OSError as e:
        return bad(f"cannot read the lock file: {e}")
    return parse(data, display, memo)


def parse(
    data: bytes, display: str, memo: Memo | None = None
) -> tuple[dict[str, LockedArtifact] | None, Finding | None]:
    """Lock file bytes (from disk or from a git revision) -> entries, or a PG104 finding."""

    def bad(message: str, line: int = 1, col: int = 1) -> tuple[None, Finding]:
        return None, _problem(display, message, line, col)

    try:
        doc = json.loads(data.decode("utf-8"), parse_int=bounded_int)
    except UnicodeDecodeError:
        return bad("lock file is not valid UTF-8")
    except json.JSONDecodeError as e:
        return bad(f"lock file is not valid JSON: {e.msg}", e.lineno, e.colno)
    except RecursionError:
        return bad("lock file is nested too deeply")
    except FormatError as e:
        return bad(f"lock file is not valid: {e.message}")
    if memo is None or memo.memo_get("lock", data) is None:
        problem = _schema_problem(doc)
        if problem is not None:
            return bad(problem)
        if memo is not None:
            memo.memo_put("lock", data, "valid")
    out: dict[str, LockedArtifact] = {}
    for rel, entry in doc["artifacts"].items():
        tensors = entry.get("tensors")
        out[rel] = LockedArtifact(
            size=entry["size"],
            sha256=entry["sha256"],
            format=entry["format"],
            tensors_digest=entry.get("tensors_digest"),
            tensors=None
            if tensors is None
            else {
                name: TensorDigest(
                    name,
                    t["dtype"],
                    tuple(t["shape"]),
                    t["blake3"],
                    t.get("constant", False),
                    t.get("formula", False),
                )
                for name, t in tensors.items()
            },
        )
    return out, None


def _schema_problem(doc: Any) -> str | None:
    import jsonschema

    from gate.manifest import schema

    try:
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(schema("lock.v1.schema.json")).iter_errors(doc)
        )
    except RecursionError:
        return "lock file is nested too deeply"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"lock file does not match its schema at `{where}`: {error.message}"


def entry(scan: FileScan) -> dict[str, Any]:
    """The lock entry for a freshly scanned file."""
    out: dict[str, Any] = {"size": scan.size, "sha256": scan.sha256, "format": scan.format}
    if scan.pointer is not None:
        out.update(size=scan.pointer.size, sha256=scan.pointer.oid, lfs_pointer=True)
    if scan.tensors is not None:
        out["tensors_digest"] = scan.tensors_digest
        out["tensors"] = {
            t.name: tensor_entry(t) for t in sorted(scan.tensors, key=lambda t: t.name)
        }
    return out


def tensor_entry(t: TensorDigest) -> dict[str, Any]:
    out: dict[str, Any] = {"dtype": t.dtype, "shape": list(t.shape), "blake3": t.digest}
    if t.constant:
        out["constant"] = True
    if t.formula:
        out["formula"] = True
    return out


def write(path: str, artifacts: dict[str, dict[str, Any]]) -> None:
    """Write the lock file atomically, keys sorted so diffs stay small."""

    def j(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    lines = ["{", '  "lock_version": 1,', f'  "generator": {j(f"provenance-gate {__version__}")},']
    lines.append('  "artifacts": {')
    for n, rel in enumerate(sorted(artifacts)):
        fields = dict(artifacts[rel])
        tensors = fields.pop("tensors", None)
        body = [f"    {j(k)}: {j(v)}" for k, v in fields.items()]
        if tensors is not None:
            rows = [f"      {j(name)}: {j(t)}" for name, t in tensors.items()]
            body.append('    "tensors": {' + ("\n" + ",\n".join(rows) + "\n    }" if rows else "}"))
        comma = "," if n < len(artifacts) - 1 else ""
        lines.append(f"   {j(rel)}: {{\n" + ",\n".join(body) + f"\n   }}{comma}")
    lines += ["  }", "}"]
    # One tensor per line: readable in review, and a changed tensor is a one-line diff.
    paths.atomic_write(path, "\n".join(lines) + "\n")


def diff_tensors(
    old: dict[str, TensorDigest], new: tuple[TensorDigest, ...], limit: int = 50
) -> tuple[str, ...]:
    """Lines naming the tensors added, removed or changed (dtype, shape or content)."""
    now = {t.name: t for t in new}
    lines: list[str] = []
    for name in sorted(old.keys() | now.keys()):
        a, b = old.get(name), now.get(name)
        if a is None:
            lines.append(f"added: {name}")
        elif b is None:
            lines.append(f"removed: {name}")
        elif (a.dtype, a.shape) != (b.dtype, b.shape):
            lines.append(
                f"changed: {name} ({a.dtype} {list(a.shape)} -> {b.dtype} {list(b.shape)})"
            )
        elif a.digest != b.digest:
            lines.append(f"changed: {name} (content)")
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    return tuple(lines)
