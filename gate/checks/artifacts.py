"""Declared artifacts (integrity, format, policy: design sections 3.2 and 3.3), the lock file, and
weight or executable files nobody declared."""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from gate import hashing, lockfile, paths, rules
from gate.evidence import Evidence, display, in_folders, weight_files
from gate.findings import ArtifactResult, Finding, Location
from gate.formats import registry
from gate.manifest import MANIFEST_NAME, Artifact, Manifest

if TYPE_CHECKING:  # the scanner itself loads only when a pickle-family file is present
    from gate.formats import exposure


class ScanOf(Protocol):
    def __call__(self, real: str, tensors: bool = False, /) -> hashing.FileScan: ...


PICKLE_HINT = (
    "convert it to safetensors; or, if you must ship it, add `pickle` to policy.allowed_formats"
)


@dataclasses.dataclass(frozen=True)
class ArtifactCheck:
    """Findings and the verification record of one declared artifact."""

    findings: list[Finding]
    result: ArtifactResult
    scan: hashing.FileScan | None = None
    pickle_scan: exposure.PickleScan | None = None  # what loaders would unpickle (never done)


def check_artifact(
    root: str,
    manifest: Manifest,
    decl: Artifact,
    locked: dict[str, lockfile.LockedArtifact] | None,
    scan_of: ScanOf,
    loads_of: Callable[[str, str], exposure.PickleScan],
) -> ArtifactCheck:
    """Verify one declared artifact: path, existence, size, digests, format and policy.

    scan_of(real_path) returns the file's scan (scan_of(real_path, True): with its per-tensor
    digests), loads_of(real_path, name) what loaders would unpickle in it; both raise the
    OSError that prevented reading it.
    """
    at = _locator(manifest, decl.index)
    out: list[Finding] = []

    def unverified(fmt: str = "unknown") -> ArtifactCheck:
        return ArtifactCheck(out, ArtifactResult(decl.path, fmt, "none", ok=False))

    real, problem = paths.resolve_inside(root, decl.path)
    if problem is not None:
        out.append(
            rules.PG202.finding(
                at("path"), f"{decl.path}: {problem}", declared=decl.path, found=problem
            )
        )
        return unverified()
    try:
        scan = scan_of(real)
    except FileNotFoundError:
        out.append(
            rules.PG201.finding(
                at("path"),
                f"{decl.path}: declared but not found in the repository",
                declared=decl.path,
                found="no such file",
            )
        )
        return unverified()
    except (IsADirectoryError, paths.NotRegularFile) as e:
        kind = e.strerror if isinstance(e, paths.NotRegularFile) else "a directory"
        out.append(
            rules.PG213.finding(
                at("path"), f"{decl.path}: is {kind}, not a file", declared=decl.path, found=kind
            )
        )
        return unverified()
    except OSError as e:
        out.append(_unreadable(decl, at, e))
        return unverified()

    if scan.changed:
        out.append(_changed(decl, at))
        return ArtifactCheck(out, ArtifactResult(decl.path, scan.format, "none", ok=False), scan)
    if scan.pointer is not None or scan.pointer_error is not None:
        out.extend(_pointer_findings(decl, scan, at))
        fmt = decl.format or _format_from_name(decl.path)
        out.extend(_policy_findings(manifest, decl, fmt, at, None, content=False))
        ok = not any(f.severity == "error" for f in out)
        size = scan.pointer.size if scan.pointer else None
        sha = scan.pointer.oid if scan.pointer else None
        return ArtifactCheck(
            out, ArtifactResult(decl.path, fmt, "lfs-pointer", ok, size, sha), scan
        )

    reread = decl.sha256 != scan.sha256 or _dependency_changed(manifest, decl, scan, scan_of, root)
    if scan.lazy and decl.tensors_digest is not None and reread:
        # Not the declared content: its tensor digests say whether the tensors changed, and
        # which (a second read). When the SHA-256 matches, the declared tensors_digest is
        # implied by it and not recomputed (README, Speed; docs/decisions.md, issue 17);
        # unless some of its tensors are in another file (ONNX external data) that changed.
        try:
            scan = scan_of(real, True)
        except OSError as e:
            out.append(_unreadable(decl, at, e))
            return unverified()
        if scan.changed:
            out.append(_changed(decl, at))
            return ArtifactCheck(
                out, ArtifactResult(decl.path, scan.format, "none", ok=False), scan
            )
    out.extend(_digest_findings(decl, scan, at, locked))
    try:
        exposure = loads_of(real, decl.path)
    except OSError as e:
        out.append(_unreadable(decl, at, e))
        return ArtifactCheck(out, ArtifactResult(decl.path, scan.format, "none", ok=False), scan)
    fmt = effective_format(scan.format, exposure)
    out.extend(_format_findings(decl, scan, fmt, at))
    out.extend(_policy_findings(manifest, decl, fmt, at, exposure, content=True))
    ok = not any(f.severity == "error" for f in out)
    result = ArtifactResult(decl.path, fmt, "content", ok, scan.size, scan.sha256)
    return ArtifactCheck(out, result, scan, exposure)


def _dependency_changed(
    manifest: Manifest, decl: Artifact, scan: hashing.FileScan, scan_of: ScanOf, root: str
) -> bool:
    """Whether a file holding some of this artifact's tensors (ONNX external data) differs
    from its own declaration: then its tensor digests are no longer implied by its SHA-256."""
    folder = posixpath.dirname(decl.path)
    declared = {a.path: a.sha256 for a in manifest.artifacts}
    for location in scan.depends:
        rel = posixpath.normpath(posixpath.join(folder, location))
        real, problem = paths.resolve_inside(root, rel)
        if problem is not None or declared.get(rel) is None:
            continue  # PG314 says why
        try:
            if scan_of(real).sha256 != declared[rel]:
                return True
        except OSError:
            continue  # its own check says why
    return False


def _changed(decl: Artifact, at: Locator) -> Finding:
    return rules.PG211.finding(
        at("path"),
        f"{decl.path}: the file changed while it was being read; its digest is meaningless",
        declared=decl.sha256,
        found="file modified during the check",
    )


def _unreadable(decl: Artifact, at: Locator, e: OSError) -> Finding:
    return rules.PG212.finding(
        at("path"),
        f"{decl.path}: cannot be read: {e.strerror}",
        declared=decl.path,
        found=e.strerror,
    )


def effective_format(label: str, exposure: exposure.PickleScan) -> str:
    """The format a file is judged as: a pickle by content (protocol 0 and 1 have no magic
    number) is a pickle whatever its name."""
    return "pickle" if label == "other" and exposure.pickle else label


Locator = Callable[[str], Location]


def _locator(manifest: Manifest, index: int) -> Locator:
    def at(field: str) -> Location:
        return manifest.locate("artifacts", index, field)

    return at


def _format_from_name(path: str) -> str:
    from gate.formats import sniff

    return sniff.sniff(b"", path, 0)


def _pointer_findings(decl: Artifact, scan: hashing.FileScan, at: Locator) -> list[Finding]:
    if scan.pointer is None:
        return [
            rules.PG210.finding(
                at("path"),
                f"{decl.path}: looks like a Git LFS pointer but is malformed: {scan.pointer_error}",
                declared=decl.sha256,
                found=scan.pointer_error,
            )
        ]
    p = scan.pointer
    out = _compare(decl, p.size, p.oid, at, source="the LFS pointer")
    out.append(
        rules.PG209.finding(
            at("path"),
            f"{decl.path}: verified from its Git LFS pointer (size and oid); the content was not"
            " read, so headers, tensors and format were not checked",
            declared=decl.sha256,
            found=f"LFS pointer oid sha256:{p.oid}, size {p.size}",
        )
    )
    return out


def _compare(decl: Artifact, size: int, sha: str, at: Locator, source: str) -> list[Finding]:
    out: list[Finding] = []
    if decl.size is None or decl.sha256 is None:
        out.append(
            rules.PG207.finding(
                at("path"),
                f"{decl.path}: no declared {'size' if decl.size is None else 'sha256'}, so nothing"
                " pins this file",
                declared="(not declared)",
                found=f"size {size}, sha256 {sha}",
            )
        )
    pairs: tuple[tuple[str, str, object, object], ...] = (
        ("PG203", "size", decl.size, size),
        ("PG204", "sha256", decl.sha256, sha),
    )
    for rule, field, declared, found in pairs:
        if declared is not None and declared != found:
            out.append(
                rules.RULES[rule].finding(
                    at(field),
                    f"{decl.path}: {field} differs ({source})",
                    declared=declared,
                    found=found,
                    hint="if the change is intended, run `provenance-gate lock`",
                )
            )
    return out


def _digest_findings(
    decl: Artifact,
    scan: hashing.FileScan,
    at: Locator,
    locked: dict[str, lockfile.LockedArtifact] | None,
) -> list[Finding]:
    out = _compare(decl, scan.size, scan.sha256, at, source="content")
    if decl.tensors_digest is None or scan.tensors is None:
        return out
    found = scan.tensors_digest
    if found == decl.tensors_digest:
        return out
    details: tuple[str, ...] = ()
    entry = (locked or {}).get(decl.path)
    if (
        entry is not None
        and entry.tensors is not None
        and entry.tensors_digest == decl.tensors_digest
    ):
        details = lockfile.diff_tensors(entry.tensors, scan.tensors)
    message = f"{decl.path}: tensor digest differs"
    if details:
        named = len([d for d in details if not d.startswith("...")])
        message += f"; {named} tensor(s) differ from the lock file"
    else:
        message += " (no matching per-tensor record in the lock file to name the changed tensors)"
    out.append(
        rules.PG205.finding(
            at("tensors_digest"),
            message,
            declared=decl.tensors_digest,
            found=found,
            details=details,
        )
    )
    return out


def _format_findings(
    decl: Artifact, scan: hashing.FileScan, fmt: str, at: Locator
) -> list[Finding]:
    out: list[Finding] = []
    if decl.format is not None and decl.format != fmt:
        out.append(
            rules.PG305.finding(
                at("format"),
                f"{decl.path}: declared as {decl.format} but the content is {fmt}",
                declared=decl.format,
                found=fmt,
            )
        )
    if scan.header_error is not None:
        rule = registry.BY_NAME[scan.format].header_rule or "PG304"
        out.append(
            rules.RULES[rule].finding(
                at("path"),
                f"{decl.path}: invalid {scan.format} header: {scan.header_error}",
                declared=f"a valid {scan.format} file",
                found=scan.header_error,
            )
        )
    elif not registry.BY_NAME[scan.format].inspected:  # pickles: PG302/PG303
        out.append(
            rules.PG306.finding(
                at("path"),
                f"{decl.path}: {scan.format} structure is not inspected by this version; only its"
                " size, sha256 and what common loaders would run were verified",
                declared=decl.format or scan.format,
                found="not checked: no structural reader for this format yet",
            )
        )
    if (
        decl.tensors_digest is not None
        and scan.tensors is None
        and not scan.lazy
        and scan.header_error is None
    ):
        # Whatever the format (pickle, numpy, other): a declared digest nobody verified is no pass.
        out.append(
            rules.PG306.finding(
                at("tensors_digest"),
                f"{decl.path}: tensors_digest not checked: no tensor table is read from"
                f" {scan.format} content",
                declared=decl.tensors_digest,
                found="not checked",
            )
        )
    return out


def _policy_findings(
    manifest: Manifest,
    decl: Artifact,
    fmt: str,
    at: Locator,
    scan: exposure.PickleScan | None,
    *,
    content: bool,
) -> list[Finding]:
    """Format policy; scan: what loaders would unpickle in the content (never done)."""
    allowed = manifest.policy.allowed_formats
    if scan is not None and scan.polyglot:
        return [_polyglot(decl, scan, at)]
    family = fmt == "pickle" or (scan is not None and scan.pickle)
    out: list[Finding] = []
    if family and "pickle" not in allowed:
        refused = _globals(scan.refused, scan) if scan is not None and scan.refused else ""
        how = f" ({'; '.join(scan.loads)})" if scan is not None and scan.loads else ""
        out.append(
            rules.PG302.finding(
                at("path"),
                f"{decl.path}: pickle-family file refused: loading it can execute arbitrary code"
                f"{how} (it was never unpickled)" + (f"; it imports {refused}" if refused else ""),
                declared=f"policy.allowed_formats: {', '.join(allowed)}",
                found="pickle" + (f" importing {refused}" if refused else ""),
                details=tuple(f"global: {g}" for g in (scan.refused if scan is not None else ()))
                + ((f"not scannable either: {scan.error}",) if scan and scan.error else ()),
                hint=PICKLE_HINT,
            )
        )
    if fmt not in allowed and fmt not in ("other", "pickle"):  # other: configs, tokenizers ...
        out.append(
            rules.PG301.finding(
                at("path"),
                f"{decl.path}: format {fmt} is not allowed by the policy",
                declared=f"policy.allowed_formats: {', '.join(allowed)}",
                found=fmt,
                hint=f"convert the file, or add `{fmt}` to policy.allowed_formats",
            )
        )
    if not family or "pickle" not in allowed:
        return out
    if not content:
        return [
            *out,
            rules.PG303.finding(
                at("path"),
                f"{decl.path}: pickle allowed by the policy but not scanned: its content is not"
                " present (Git LFS pointer)",
                declared="policy.allowed_formats includes pickle",
                found="not checked: content not read",
            ),
        ]
    return out + (_pickle_scan_findings(decl, scan, at) if scan is not None else [])


def _polyglot(decl: Artifact, scan: exposure.PickleScan, at: Locator) -> Finding:
    imports = _globals(scan.globals, scan)
    return rules.PG310.finding(
        at("path"),
        f"{decl.path}: a polyglot: valid as {scan.structure} and also a pickle that imports"
        f" {imports} when pickle.load, joblib.load or torch.load read it (it was never"
        " unpickled); refused in every policy",
        declared=decl.format or f"a {scan.structure} file",
        found=f"{scan.structure} and a pickle importing {imports}",
        details=tuple(f"global: {g}" for g in scan.globals),
    )


def _globals(names: tuple[str, ...], scan: exposure.PickleScan) -> str:
    return ", ".join(f"{g} (dangerous)" if g in scan.dangerous else g for g in names) or "nothing"


def _pickle_scan_findings(decl: Artifact, scan: exposure.PickleScan, at: Locator) -> list[Finding]:
    out: list[Finding] = []
    if scan.refused:
        out.append(
            rules.PG307.finding(
                at("path"),
                f"{decl.path}: pickle imports globals outside the allowlist:"
                f" {_globals(scan.refused, scan)} (it was never unpickled)",
                declared="a checkpoint importing only tensor and container types",
                found=_globals(scan.refused, scan),
                details=tuple(f"global: {g}" for g in scan.refused),
            )
        )
    if scan.error is not None:
        out.append(
            rules.PG308.finding(
                at("path"),
                f"{decl.path}: pickle could not be scanned completely, so it is refused:"
                f" {scan.error}",
                declared="a pickle the static scanner can read",
                found=scan.error,
                hint=PICKLE_HINT,
            )
        )
    return out


def declared(ev: Evidence) -> list[Finding]:
    """The lock file's problem, then each declared artifact's findings (a duplicate entry is
    PG208) and whether the lock file still agrees with its declared sha256."""
    out: list[Finding] = [ev.lock_problem] if ev.lock_problem is not None else []
    for decl, done in zip(ev.manifest.artifacts, ev.artifacts, strict=True):
        if done is None:
            out.append(
                rules.PG208.finding(
                    ev.manifest.locate("artifacts", decl.index, "path"),
                    f"{decl.path} is declared more than once",
                    declared=decl.path,
                    found="duplicate entry",
                )
            )
            continue
        out.extend(done.findings)
        out.extend(_stale_lock(ev, decl))
    return out


def undeclared(ev: Evidence) -> list[Finding]:
    """PG206 for weight files nobody declared (by name, or by content under any name), PG311
    for any other file a common loader would run code from (`ignore` is no escape hatch)."""
    declared_paths = ev.declared
    files = {f for f in ev.files if not in_folders(f, ev.folders)}
    ignored = paths.GlobSet(ev.manifest.ignore)
    found = weight_files(ev.target.root, files - declared_paths, ignored, ev.scanner.loads)
    rest = sorted(ev.files - declared_paths - set(found))
    return _undeclared(ev, found) + _executable(ev, rest)


def _stale_lock(ev: Evidence, decl: Artifact) -> list[Finding]:
    manifest, locked = ev.manifest, ev.locked
    if locked is None or decl.sha256 is None:
        return []
    entry = locked.get(decl.path)
    if entry is not None and entry.sha256 == decl.sha256:
        return []
    found = "no entry" if entry is None else f"sha256 {entry.sha256}"
    return [
        rules.PG105.finding(
            manifest.locate("artifacts", decl.index, "sha256"),
            f"{decl.path}: the lock file does not match the manifest's sha256",
            declared=decl.sha256,
            found=f"{display(ev.target, ev.lock_file)}: {found}",
        )
    ]


def _undeclared(ev: Evidence, undeclared: dict[str, str]) -> list[Finding]:
    manifest = ev.manifest
    at = (
        manifest.locate("artifacts", key=True)
        if manifest.artifacts
        else manifest.locate("model", key=True)
    )
    out = []
    for rel, how in undeclared.items():
        hidden = "" if how == "name" else f" (its content is {how}, whatever its name says)"
        danger = _danger(ev, rel)
        out.append(
            rules.PG206.finding(
                at,
                f"{rel} is a weight file in the repository but is not declared in artifacts"
                + hidden
                + (f"; {danger}" if danger else ""),
                declared="(not declared)",
                found=rel,
            )
        )
    return out


def _danger(ev: Evidence, rel: str) -> str | None:
    """What loading a file would run that the allowlist does not allow, or None."""
    real, problem = paths.resolve_inside(ev.target.root, rel)
    if problem is not None:
        return None
    try:
        exposure = ev.scanner.loads(real, rel)
    except OSError:
        return None
    if not exposure.executable:
        return None
    how = "; ".join(exposure.loads) or "a loader"
    if exposure.refused:
        return f"loading it would import {', '.join(exposure.refused)} ({how})"
    return f"a loader would run what the scan could not follow ({exposure.risk})"


def _executable(ev: Evidence, rels: list[str]) -> list[Finding]:
    """PG311 for files that are not artifacts (ignored, in a base or reference folder, or not
    weight-like) yet would run code under a common loader: `ignore` is no escape hatch."""
    manifest = ev.manifest
    at = (
        manifest.locate("ignore", key=True)
        if manifest.ignore
        else manifest.locate("model", key=True)
    )
    out = []
    for rel in rels:
        if rel in (lockfile.LOCK_NAME, MANIFEST_NAME):
            continue
        danger = _danger(ev, rel)
        if danger is None:
            continue
        out.append(
            rules.PG311.finding(
                at,
                f"{rel}: {danger}; it is not a declared artifact, and ignoring it does not make"
                " it safe to ship",
                declared="(not an artifact)",
                found=danger,
            )
        )
    return out
