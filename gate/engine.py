"""manifest + repository -> Report. No printing, no exiting: the CLI decides."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from gate import __version__, consistency, hashing, hub, lfs, lockfile, paths, rules, shards
from gate.errors import GateError, ManifestError, NothingToCheck
from gate.findings import ArtifactResult, FailOn, Finding, Report
from gate.formats import sniff
from gate.hub import Hub
from gate.hubbase import HubBases
from gate.integrity import check_artifact
from gate.lineage.verify import LineageDepth
from gate.lineage.verify import check as verify_lineage
from gate.manifest import MANIFEST_NAME, Artifact, Manifest, Memo, parse, read_bytes
from gate.scanner import Scanner

if TYPE_CHECKING:
    from gate.formats.exposure import PickleScan


@dataclasses.dataclass(frozen=True)
class Target:
    """Which repository and manifest a command works on."""

    root: str  # real path of the repository folder
    manifest_path: str
    manifest_display: str

    @classmethod
    def resolve(cls, directory: str, manifest: str | None) -> Target:
        """Check the folder and locate the manifest (default: DIR/provenance.yaml)."""
        if not os.path.isdir(directory):
            raise GateError(
                f"{directory}: not a directory", hint="pass the model repository's folder"
            )
        root = os.path.realpath(directory)
        path = os.path.abspath(manifest) if manifest else os.path.join(root, MANIFEST_NAME)
        real = os.path.realpath(path)
        named = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        if paths.is_within(named, root) and not paths.is_within(real, root):
            # Its values would be echoed into annotations and reports: never read through a link
            # that leaves the repository (an explicit --manifest elsewhere is the user's choice).
            raise ManifestError(
                f"a symlink resolving outside the repository (to {real}); not read",
                where=os.path.relpath(named, root),
                hint="commit the manifest itself in the repository, not a link to it",
            )
        display = os.path.relpath(real, root) if paths.is_within(real, root) else path
        return cls(root=root, manifest_path=path, manifest_display=display.replace(os.sep, "/"))


def load_manifest(
    target: Target, memo: Memo | None = None
) -> tuple[Manifest | None, list[Finding]]:
    """Read and validate the manifest; a missing one is NothingToCheck or ManifestError."""
    if not os.path.exists(target.manifest_path):
        weights = list(weight_files(target.root, list(paths.walk_files(target.root))))
        if not weights:
            raise NothingToCheck(
                f"no {MANIFEST_NAME} and no weight files in {target.root}",
                hint="nothing to verify; run `provenance-gate init` in a model repository",
            )
        raise ManifestError(
            f"no manifest, but {len(weights)} weight file(s) are present (e.g. {weights[0]})",
            where=target.manifest_display,
            hint="run `provenance-gate init` to scaffold provenance.yaml",
        )
    data = read_bytes(target.manifest_path, target.manifest_display)
    return parse(data, target.manifest_display, memo)


def check(
    target: Target,
    fail_on: FailOn = "error",
    scanner: Scanner | None = None,
    lineage_depth: LineageDepth = "full",
    offline: bool = False,
    strict: bool = False,
) -> Report:
    """Run every implemented check; checks not implemented are reported as not checked.

    lineage_depth "exact" limits lineage to tier 0 (digests from the cached scan): the fast,
    numpy-free mode for pre-commit. strict: a check that could not run (rules.NOT_RUN) is an
    error (CI), instead of a note or warning (pre-commit, offline work).
    """
    scanner = scanner or Scanner()
    manifest, problems = load_manifest(target, scanner.cache)
    if manifest is None:
        return _report(target, problems, (), fail_on, manifest_invalid=True)
    findings: list[Finding] = []
    lock_file = lockfile.lock_path(target.manifest_path)
    locked, lock_problem = lockfile.read(
        lock_file, _display(target, lock_file), scanner.cache, root=target.root
    )
    if lock_problem is not None:
        findings.append(lock_problem)

    results: list[ArtifactResult] = []
    scans: dict[str, hashing.FileScan] = {}
    pickled: list[tuple[str, str, PickleScan]] = []  # (declared path, real path, scan)
    declared: set[str] = set()
    reals = [paths.resolve_inside(target.root, a.path) for a in manifest.artifacts]
    scanned = scanner.scan_many(real for real, problem in reals if problem is None)

    def scan_of(real: str) -> hashing.FileScan:
        result = scanned[real]
        if isinstance(result, OSError):
            raise result
        return result

    for decl in manifest.artifacts:
        norm = os.path.normpath(decl.path).replace(os.sep, "/")
        if norm in declared:
            findings.append(
                rules.PG208.finding(
                    manifest.locate("artifacts", decl.index, "path"),
                    f"{decl.path} is declared more than once",
                    declared=decl.path,
                    found="duplicate entry",
                )
            )
            continue
        declared.add(norm)
        done = check_artifact(target.root, manifest, decl, locked, scan_of, scanner.loads)
        findings.extend(done.findings)
        results.append(done.result)
        if done.scan is not None:
            scans[norm] = done.scan
        if done.pickle_scan is not None and done.scan is not None and done.scan.format == "pickle":
            pickled.append((decl.path, reals[decl.index][0], done.pickle_scan))
        findings.extend(_stale_lock(manifest, decl, locked, lock_file, target))

    folders = other_models(manifest)
    everything = set(paths.walk_files(target.root))
    files = {f for f in everything if not in_folders(f, folders)}
    ignored = paths.GlobSet(manifest.ignore)
    undeclared = weight_files(target.root, files - declared, ignored, scanner.loads)
    findings.extend(_undeclared(target, manifest, undeclared, scanner))
    findings.extend(
        _executable(target, manifest, sorted(everything - declared - set(undeclared)), scanner)
    )
    for rel in sorted(f for f in files if shards.is_index(f)):
        if not ignored.match(rel):
            findings.extend(
                shards.check_index(target.root, rel, files, _headers(target.root, scans))
            )
    extra, unread, refusals = _pickled_tensors(manifest, pickled)
    findings.extend(refusals)
    own, borrowed = _own_scans(manifest, scans, folders)
    findings.extend(borrowed)
    hubs = HubBases(manifest, _connect(offline), scanner.cache)
    findings.extend(
        verify_lineage(target.root, manifest, own, scanner, extra, unread, lineage_depth, hubs)
    )
    findings.extend(consistency.check(target.root, manifest, scanner.cache, hubs))
    findings.extend(hubs.findings)
    nothing = not manifest.artifacts and not any(f.rule == "PG206" for f in findings)
    if strict:
        findings = [rules.strict(f) for f in findings]
    return _report(target, findings, tuple(results), fail_on, nothing_to_check=nothing)


def _connect(offline: bool) -> Callable[[], Hub] | None:
    """How to reach the Hub when a Hub base needs it (None: the `hub` extra is missing)."""
    if not hub.available():
        return None
    return lambda: hub.HubClient(offline=offline)


def _pickled_tensors(
    manifest: Manifest, pickled: list[tuple[str, str, PickleScan]]
) -> tuple[list[hashing.TensorDigest], list[str], list[Finding]]:
    """Tensors of allowed torch checkpoints whose static scan passed (torch extra), gaps, and
    PG312 for a checkpoint the scan passed but torch's restricted loader would not read."""
    tensors: list[hashing.TensorDigest] = []
    unread: list[str] = []
    refusals: list[Finding] = []
    if not pickled:
        return tensors, unread, refusals
    from gate.formats import torch_weights

    for rel, real, scan in pickled:
        if "pickle" not in manifest.policy.allowed_formats or not scan.ok:
            unread.append(f"{rel}: refused pickle, never loaded")
            continue
        try:
            tensors += torch_weights.tensor_digests(real, scan)
        except torch_weights.TorchUnavailable:
            unread.append(f"{rel}: reading torch checkpoints needs the torch extra")
        except Exception as e:  # torch's restricted loader refusing what the scan passed
            unread.append(f"{rel}: torch could not load it ({type(e).__name__})")
            if not torch_weights.disagrees(scan):
                continue  # e.g. a numpy pickle: torch is not its loader, nothing disagrees
            index = next(a.index for a in manifest.artifacts if a.path == rel)
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            refusals.append(
                rules.PG312.finding(
                    manifest.locate("artifacts", index, "path"),
                    f"{rel}: the static scan passed this checkpoint but torch's restricted loader"
                    f" (weights_only=True) refused or misread it ({why}); the two readers"
                    " disagree, so it is refused",
                    declared="a checkpoint torch.load(weights_only=True) reads",
                    found=why,
                )
            )
    return tensors, unread, refusals


def _own_scans(
    manifest: Manifest, scans: dict[str, hashing.FileScan], folders: tuple[str, ...]
) -> tuple[dict[str, hashing.FileScan], list[Finding]]:
    """The scans of this model's own weights, and a PG214 note for each declared artifact in a
    base-model or reference folder: it is checked like any artifact, but counting the base's
    tensors as the candidate's would make any derivative look like a copy of its base."""
    own: dict[str, hashing.FileScan] = {}
    notes: list[Finding] = []
    index = {os.path.normpath(a.path).replace(os.sep, "/"): a.index for a in manifest.artifacts}
    for rel, scan in scans.items():
        folder = next((f for f in folders if in_folders(rel, (f,))), None)
        if folder is None:
            own[rel] = scan
            continue
        notes.append(
            rules.PG214.finding(
                manifest.locate("artifacts", index[rel], "path"),
                f"{rel} lies in {folder}, a base-model or reference folder: its checksums are"
                " verified, but it is not counted as this model's weights in the lineage checks",
                declared=rel,
                found=f"in {folder}",
            )
        )
    return own, notes


def other_models(manifest: Manifest) -> tuple[str, ...]:
    """Folders holding base models and references: their weights are not this model's artifacts."""
    folders = [b.path for b in manifest.base_models if b.path] + list(manifest.policy.references)
    return tuple(
        os.path.normpath(f).replace(os.sep, "/") for f in folders if not f.startswith("hf://")
    )


def in_folders(rel: str, folders: tuple[str, ...]) -> bool:
    """Whether a repository path lies in (or is) one of the folders."""
    return any(rel == f or rel.startswith(f + "/") for f in folders)


def _display(target: Target, path: str) -> str:
    named = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    return os.path.relpath(named, target.root) if paths.is_within(named, target.root) else path


def _report(
    target: Target,
    findings: list[Finding],
    artifacts: tuple[ArtifactResult, ...],
    fail_on: FailOn,
    *,
    manifest_invalid: bool = False,
    nothing_to_check: bool = False,
) -> Report:
    return Report(
        tool_version=__version__,
        root=target.root,
        manifest=target.manifest_display,
        findings=tuple(findings),
        artifacts=artifacts,
        fail_on=fail_on,
        manifest_invalid=manifest_invalid,
        nothing_to_check=nothing_to_check,
    )


def _stale_lock(
    manifest: Manifest,
    decl: Artifact,
    locked: dict[str, lockfile.LockedArtifact] | None,
    lock_file: str,
    target: Target,
) -> list[Finding]:
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
            found=f"{_display(target, lock_file)}: {found}",
        )
    ]


def weight_files(
    root: str,
    files: set[str] | list[str],
    ignored: paths.GlobSet | None = None,
    loads: Callable[[str, str], PickleScan] | None = None,
) -> dict[str, str]:
    """Weight files among repository files: by extension, or by content under any other name
    (rel -> "name", or the format the content reveals). loads: Scanner.loads (default: uncached)."""
    special = {lockfile.LOCK_NAME, MANIFEST_NAME}
    loads = loads or Scanner().loads
    out: dict[str, str] = {}
    for rel in sorted(files):
        if rel in special or (ignored is not None and ignored.match(rel)):
            continue
        if sniff.is_weight_name(rel):
            out[rel] = "name"
        elif not shards.is_index(rel):
            found = _content_format(root, rel, loads)
            if found is not None:
                out[rel] = found
    return out


def _content_format(root: str, rel: str, loads: Callable[[str, str], PickleScan]) -> str | None:
    """The weight format a file's bytes reveal whatever its name, or None for other files. A
    symlink leaving the repository is never opened."""
    real, problem = paths.resolve_inside(root, rel)
    if problem is not None:
        return None
    try:
        exposure = loads(real, rel)
    except OSError:
        return None
    if exposure.pickle:
        return "pickle"
    return sniff.WEIGHT_STRUCTURES.get(exposure.structure or "")


def _undeclared(
    target: Target, manifest: Manifest, undeclared: dict[str, str], scanner: Scanner
) -> list[Finding]:
    at = (
        manifest.locate("artifacts", key=True)
        if manifest.artifacts
        else manifest.locate("model", key=True)
    )
    out = []
    for rel, how in undeclared.items():
        hidden = "" if how == "name" else f" (its content is {how}, whatever its name says)"
        danger = _danger(target, rel, scanner)
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


def _danger(target: Target, rel: str, scanner: Scanner) -> str | None:
    """What loading a file would run that the allowlist does not allow, or None."""
    real, problem = paths.resolve_inside(target.root, rel)
    if problem is not None:
        return None
    try:
        exposure = scanner.loads(real, rel)
    except OSError:
        return None
    if not exposure.executable:
        return None
    how = "; ".join(exposure.loads) or "a loader"
    if exposure.refused:
        return f"loading it would import {', '.join(exposure.refused)} ({how})"
    return f"a loader would run what the scan could not follow ({exposure.risk})"


def _executable(
    target: Target, manifest: Manifest, rels: list[str], scanner: Scanner
) -> list[Finding]:
    """PG311 for files that are not artifacts (ignored, in a base or reference folder, or not
    weight-like) yet would run code under a common loader: `ignore` is no escape hatch."""
    at = (
        manifest.locate("ignore", key=True)
        if manifest.ignore
        else manifest.locate("model", key=True)
    )
    out = []
    for rel in rels:
        if rel in (lockfile.LOCK_NAME, MANIFEST_NAME):
            continue
        danger = _danger(target, rel, scanner)
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


def _headers(root: str, scans: dict[str, hashing.FileScan]) -> shards.HeaderSource:
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
