"""Two versions of a model repository -> annotated changes, for pull requests that bump a model.

The manifest and the lock file are read at the base revision with `git show` (never by checking
it out) and at the head (a revision, or the working tree). Changes are notes and warnings
located at the head manifest's lines; when the head is the working tree, the full check runs on
it too, so the report also says whether the new declarations still verify.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from collections import defaultdict

from gate import lockfile, manifest, paths, rules
from gate.errors import GateError
from gate.findings import Finding, Report
from gate.lockfile import LockedArtifact
from gate.manifest import Manifest
from gate.positions import MAX_YAML_BYTES as MAX_MANIFEST_BYTES

GIT_TIMEOUT_S = 60
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|blk|layer)\.(\d+)\.")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@{}~^:-]*$")


@dataclasses.dataclass(frozen=True)
class Side:
    """The declarations at one revision."""

    ref: str  # a git revision, or "working tree"
    manifest: Manifest | None
    lock: dict[str, LockedArtifact] | None
    problem: str | None = None


def git(root: str, *args: str, limit: int = MAX_MANIFEST_BYTES) -> bytes | None:
    """Output of a git command in root (None when it fails), capped at limit bytes."""
    exe = shutil.which("git")
    if exe is None:
        raise GateError("git is not installed", hint="diff reads revisions with git")
    try:
        # fixed git subcommands; a revision is validated by resolve() before it gets here
        done = subprocess.run(  # noqa: S603
            [exe, "-C", root, *args], capture_output=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise GateError(f"cannot run git: {e}", hint="install git, or run in a clone") from None
    if done.returncode != 0 or len(done.stdout) > limit:
        return None
    return done.stdout


def resolve(root: str, ref: str) -> str:
    """A full commit id for ref; refuses what could be read as an option."""
    if not _REF.match(ref):
        raise GateError(f"not a git revision: {ref!r}", hint="pass a branch, tag or commit id")
    out = git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    if out is None:
        raise GateError(
            f"unknown git revision {ref!r} in {root}",
            hint="fetch it first (actions/checkout with fetch-depth: 0)",
        )
    return out.decode().strip()


def load(root: str, manifest_rel: str, ref: str | None) -> Side:
    """The manifest and lock file at ref (None: the working tree)."""
    lock_rel = os.path.join(os.path.dirname(manifest_rel), lockfile.LOCK_NAME)
    if ref is None:
        return _parsed(
            "working tree", _read(root, manifest_rel), _read(root, lock_rel), manifest_rel
        )
    inside = git(root, "rev-parse", "--show-prefix")
    if inside is None:
        raise GateError(f"{root} is not in a git repository", hint="diff compares git revisions")
    prefix = inside.decode().strip()
    commit = resolve(root, ref)

    def show(rel: str, limit: int) -> bytes | None:
        return git(root, "show", f"{commit}:{prefix}{rel}", limit=limit)

    return _parsed(
        ref,
        show(manifest_rel, MAX_MANIFEST_BYTES),
        show(lock_rel, lockfile.MAX_LOCK_BYTES),
        manifest_rel,
    )


def _read(root: str, rel: str) -> bytes | None:
    real, escape = paths.resolve_inside(root, rel)
    if escape is not None or not os.path.isfile(real):
        return None
    try:
        with paths.open_regular(real) as f:
            return paths.read_capped(f, lockfile.MAX_LOCK_BYTES)
    except OSError:
        return None  # unreadable: reported by the check of the working tree


def _parsed(ref: str, data: bytes | None, lock: bytes | None, display: str) -> Side:
    if data is None:
        return Side(ref, None, None, f"no {display} at {ref}")
    parsed, problems = manifest.parse(data, display)
    if parsed is None:
        return Side(ref, None, None, f"{display} at {ref} is invalid: {problems[0].message}")
    locked = lockfile.parse(lock, display)[0] if lock is not None else None
    return Side(ref, parsed, locked)


def changes(base: Side, head: Side) -> list[Finding]:
    """What changed from base to head, located at the head manifest's lines."""
    if head.manifest is None:
        raise GateError(head.problem or "no manifest at the head revision")
    m = head.manifest
    if base.manifest is None:
        return [
            rules.PG706.finding(
                m.locate(),
                f"nothing to compare with: {base.problem}",
                declared=base.ref,
                found=base.problem,
            )
        ]
    b = base.manifest
    out: list[Finding] = []
    before = {a.path: a for a in b.artifacts}
    after = {a.path: a for a in m.artifacts}
    for path in sorted(after.keys() - before.keys()):
        out.append(
            rules.PG701.finding(
                m.locate("artifacts", after[path].index, "path"),
                f"{path}: new artifact ({_size(after[path].size)})",
                declared="(absent)",
                found=f"sha256 {after[path].sha256}",
            )
        )
    for path in sorted(before.keys() - after.keys()):
        out.append(
            rules.PG702.finding(
                m.locate("artifacts"),
                f"{path}: artifact removed",
                declared=f"sha256 {before[path].sha256}",
                found="(absent)",
            )
        )
    for path in sorted(before.keys() & after.keys()):
        old, new = before[path], after[path]
        if (old.sha256, old.size) == (new.sha256, new.size):
            continue
        details = _tensor_changes(path, base.lock, head.lock)
        out.append(
            rules.PG703.finding(
                m.locate("artifacts", new.index, "sha256"),
                f"{path}: weights changed ({_size(old.size)} -> {_size(new.size)})"
                + (f"; {details[0]}" if details else ""),
                declared=f"sha256 {old.sha256} at {base.ref}",
                found=f"sha256 {new.sha256}",
                details=details[1:],
            )
        )
    for key in ("license", "license_name", "license_link", "commercial_use"):
        was, now = getattr(b, key), getattr(m, key)
        if was != now:
            out.append(
                rules.PG704.finding(
                    m.locate("model", key),
                    f"`{key}` changed from `{was}` to `{now}`",
                    declared=f"{was} at {base.ref}",
                    found=str(now),
                )
            )
    out += _lineage_changes(b, m, base.ref)
    return out


def _lineage_changes(b: Manifest, m: Manifest, ref: str) -> list[Finding]:
    out: list[Finding] = []
    if b.origin != m.origin:
        out.append(
            rules.PG705.finding(
                m.locate("model", "origin"),
                f"origin changed from `{b.origin}` to `{m.origin}`",
                declared=f"{b.origin} at {ref}",
                found=m.origin,
            )
        )
    was = {x.name: x for x in b.base_models}
    for i, base in enumerate(m.base_models):
        old = was.get(base.name)
        if old is None:
            what = f"base model {base.name} added ({base.relation})"
        elif (old.relation, old.revision, old.weight) != (
            base.relation,
            base.revision,
            base.weight,
        ):
            what = (
                f"base model {base.name}: relation {old.relation} -> {base.relation}, revision"
                f" {old.revision} -> {base.revision}, weight {old.weight} -> {base.weight}"
            )
        else:
            continue
        out.append(
            rules.PG705.finding(
                m.locate("base_models", i),
                what,
                declared=ref,
                found=f"{base.relation} of {base.name}",
            )
        )
    for name in sorted(was.keys() - {x.name for x in m.base_models}):
        out.append(
            rules.PG705.finding(
                m.locate("model", "origin"),
                f"base model {name} removed",
                declared=f"{was[name].relation} of {name}",
                found="(absent)",
            )
        )
    return out


def _tensor_changes(
    path: str, before: dict[str, LockedArtifact] | None, after: dict[str, LockedArtifact] | None
) -> tuple[str, ...]:
    """A summary line, then one line per layer: which tensors were added, removed, changed."""
    old = (before or {}).get(path)
    new = (after or {}).get(path)
    if old is None or new is None or old.tensors is None or new.tensors is None:
        return (
            "tensor-level changes unknown: no per-tensor digests in the lock file at both"
            " revisions",
        )
    a, b = old.tensors, new.tensors
    per_layer: dict[str, list[str]] = defaultdict(list)
    counts = {"changed": 0, "added": 0, "removed": 0}
    for name in sorted(a.keys() | b.keys()):
        if name not in a:
            kind = "added"
        elif name not in b:
            kind = "removed"
        elif (a[name].digest, a[name].shape, a[name].dtype) != (
            b[name].digest,
            b[name].shape,
            b[name].dtype,
        ):
            kind = "changed"
        else:
            continue
        counts[kind] += 1
        m = _LAYER.search(name)
        layer = f"layer {m.group(1)}" if m else "other"
        per_layer[layer].append(f"{kind} {name[m.end() :] if m else name}")
    summary = (
        f"{counts['changed']} of {len(b)} tensors changed, {counts['added']} added,"
        f" {counts['removed']} removed (the lock records digests, not magnitudes)"
    )
    lines = [summary]
    for layer in sorted(per_layer, key=_layer_key):
        items = per_layer[layer]
        shown = "; ".join(items[:6]) + ("; …" if len(items) > 6 else "")
        lines.append(f"{layer}: {shown}")
    return tuple(lines)


def _layer_key(name: str) -> tuple[int, int]:
    return (1, 0) if name == "other" else (0, int(name.split()[1]))


def _size(n: int | None) -> str:
    return "size unknown" if n is None else f"{n:,} bytes"


def report(
    root: str, manifest_display: str, findings: list[Finding], verified: Report | None
) -> Report:
    """Changes first, then (when the head is the working tree) the head's own check."""
    from gate import __version__

    if verified is None:
        return Report(__version__, root, manifest_display, tuple(findings))
    return dataclasses.replace(verified, findings=tuple(findings) + verified.findings)
