"""Everything one run of `check` (or `lock`, `init`) looks at, gathered once: the manifest, the
lock file, each declared artifact's scan and verification, the repository's files, the Hub
session. Checks (gate/checks/) read an Evidence and return findings; nothing here judges a claim.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from gate import hashing, lockfile, paths
from gate.errors import GateError, ManifestError, NothingToCheck
from gate.findings import BaseLineage, FailOn, Finding
from gate.formats import registry, sniff
from gate.manifest import MANIFEST_NAME, Manifest, Memo, declared_reads, parse, read_bytes
from gate.scanner import Scanner

if TYPE_CHECKING:
    from gate.checks.artifacts import ArtifactCheck
    from gate.formats.exposure import PickleScan
    from gate.hubclient import Hub
    from gate.hubmodels import HubBases

LineageDepth = Literal["full", "exact"]


@dataclasses.dataclass(frozen=True)
class Options:
    """How to judge, from the command line (nothing below cli.py reads the environment for
    these: gate/settings.py is the one place that does).

    lineage_depth "exact" limits lineage to tier 0 (digests from the cached scan): the fast,
    numpy-free mode for pre-commit. strict: a check that could not run (rules.NOT_RUN) is an
    error (CI), instead of a note or warning (pre-commit, offline work).
    """

    fail_on: FailOn = "error"
    lineage_depth: LineageDepth = "full"
    strict: bool = False
    cache_dir: str | None = None  # the gate's cache folder (probe calibration); None: default
    indexes: tuple[str, ...] = ()  # pack indexes beyond the manifest's (folders or hf:// ids)
    offline: bool = False  # Hub indexes from the cache only


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
    target: Target, memo: Memo | None = None, early: Callable[[Any], None] | None = None
) -> tuple[Manifest | None, list[Finding]]:
    """Read and validate the manifest; a missing one is NothingToCheck or ManifestError.
    early: see manifest.parse (e.g. `prefetch`)."""
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
    return parse(data, target.manifest_display, memo, early)


def prefetch(target: Target, scanner: Scanner, all_tensors: bool = False) -> Callable[[Any], None]:
    """A manifest.parse hook that starts reading the declared artifacts (inside the
    repository) before the manifest is validated, with the per-tensor digests `gather` will
    ask for; the caller cancels the reads if the manifest turns out invalid."""

    def start(plain: Any) -> None:
        declared, lineage = declared_reads(plain)
        found = []
        for path in declared:
            try:
                real, problem = paths.resolve_inside(target.root, path)
            except (OSError, ValueError):  # a hint: validation reports what is wrong with it
                continue
            if problem is None:
                found.append(real)
        scanner.prefetch(found, tensors=all_tensors or lineage)

    return start


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What the checks read. `artifacts` holds one verification per declared entry (None for a
    duplicate of an earlier entry); `scanner` memoizes every further read (pickle scans)."""

    target: Target
    manifest: Manifest
    options: Options
    scanner: Scanner
    lock_file: str
    locked: dict[str, lockfile.LockedArtifact] | None
    lock_problem: Finding | None
    artifacts: tuple[ArtifactCheck | None, ...]
    files: frozenset[str]  # every file of the repository (relative, "/"-separated)
    folders: tuple[str, ...]  # base-model and reference folders: other models' files
    hubs: HubBases
    # What checks write, for the report's bill of materials (findings say where a claim failed;
    # a BOM states every base's evidence): the lineage check, what the weights showed about each
    # declared base (by its index in base_models); the signature check, the whole-file BLAKE3
    # digests it computed (for a signature made with BLAKE3)
    lineage: dict[int, BaseLineage] = dataclasses.field(default_factory=dict)
    blake3: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def declared(self) -> frozenset[str]:
        return frozenset(norm(a.path) for a in self.manifest.artifacts)


def gather(
    target: Target,
    manifest: Manifest,
    options: Options,
    scanner: Scanner,
    connect: Callable[[], Hub] | None = None,
    *,
    all_tensors: bool = False,
) -> Evidence:
    """Scan every declared artifact (stat cache first, then in parallel) and verify each once;
    connect: makes the Hub client when a Hub model needs it (None: the `hub` extra is
    missing).

    Per-tensor digests are computed in the same read only where they will be needed: for
    `lock` (all_tensors) and, when the manifest makes a lineage claim, for the exact tier.
    Otherwise a check computes one SHA-256 per byte; a file whose SHA-256 differs from the
    declared one is read again for its tensor digests, to name the tensors that changed."""
    from gate.checks.artifacts import check_artifact
    from gate.hubmodels import HubBases

    lock_file = lockfile.lock_path(target.manifest_path)
    locked, lock_problem = lockfile.read(
        lock_file, display(target, lock_file), scanner.cache, root=target.root
    )
    reals = [paths.resolve_inside(target.root, a.path) for a in manifest.artifacts]
    found = [real for real, problem in reals if problem is None]
    scanned = scanner.scan_many(found, tensors=all_tensors or manifest.claims_lineage)

    def scan_of(real: str, tensors: bool = False) -> hashing.FileScan:
        result = scanned[real]
        if isinstance(result, OSError):
            raise result
        if tensors and result.lazy:
            result = scanned[real] = scanner.scan(real, tensors=True)
        return result

    seen: set[str] = set()
    artifacts: list[ArtifactCheck | None] = []
    for decl in manifest.artifacts:
        path = norm(decl.path)
        if path in seen:
            artifacts.append(None)
            continue
        seen.add(path)
        artifacts.append(
            check_artifact(target.root, manifest, decl, locked, scan_of, scanner.loads)
        )
    return Evidence(
        target=target,
        manifest=manifest,
        options=options,
        scanner=scanner,
        lock_file=lock_file,
        locked=locked,
        lock_problem=lock_problem,
        artifacts=tuple(artifacts),
        files=frozenset(paths.walk_files(target.root)),
        folders=other_models(manifest),
        hubs=HubBases(manifest, connect, scanner.cache),
    )


def norm(path: str) -> str:
    """A declared path as the repository's file list spells it ("/"-separated, normalised)."""
    return os.path.normpath(path).replace(os.sep, "/")


def other_models(manifest: Manifest) -> tuple[str, ...]:
    """Folders holding base models, references and pack indexes: their weights are not this
    model's artifacts."""
    folders = [b.path for b in manifest.base_models if b.path] + list(manifest.policy.references)
    folders += manifest.policy.index
    return tuple(
        os.path.normpath(f).replace(os.sep, "/") for f in folders if not f.startswith("hf://")
    )


def in_folders(rel: str, folders: tuple[str, ...]) -> bool:
    """Whether a repository path lies in (or is) one of the folders."""
    return any(rel == f or rel.startswith(f + "/") for f in folders)


def display(target: Target, path: str) -> str:
    named = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    return os.path.relpath(named, target.root) if paths.is_within(named, target.root) else path


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
        elif not rel.endswith(registry.INDEX_SUFFIX):
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
