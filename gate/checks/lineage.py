"""The lineage check: this model's own weights (not a base or reference folder's) against the
manifest's claims (gate/lineage/claims.py), with the tensors of allowed torch checkpoints."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from gate import hashing, paths, rules
from gate.evidence import Evidence, in_folders, norm
from gate.findings import Finding
from gate.lineage.claims import check as judge_claims
from gate.manifest import Manifest

if TYPE_CHECKING:
    from gate.formats.exposure import PickleScan


def check(ev: Evidence) -> list[Finding]:
    """PG312 for a checkpoint torch's loader refuses, PG214 for declared artifacts in base
    folders, then the scratch claim's and each base model's findings."""
    m = ev.manifest
    scans: dict[str, hashing.FileScan] = {}
    pickled: list[tuple[str, str, PickleScan]] = []  # (declared path, real path, scan)
    for decl, done in zip(m.artifacts, ev.artifacts, strict=True):
        if done is None or done.scan is None:
            continue
        scans[norm(decl.path)] = done.scan
        if done.pickle_scan is not None and done.scan.format == "pickle":
            real, _ = paths.resolve_inside(ev.target.root, decl.path)
            pickled.append((decl.path, real, done.pickle_scan))
    extra, unread, refusals = _pickled_tensors(m, pickled)
    own, borrowed = _own_scans(m, scans, ev.folders)
    depth = ev.options.lineage_depth
    return [
        *refusals,
        *borrowed,
        *judge_claims(
            ev.target.root,
            m,
            own,
            ev.scanner,
            extra,
            unread,
            depth,
            ev.hubs,
            ev.options.cache_dir,
            ev.lineage,
        ),
    ]


def own_scans(m: Manifest, ev: Evidence) -> dict[str, hashing.FileScan]:
    """The scans of this model's own declared weights (not in a base, reference or index
    folder), keyed by their normalised paths."""
    scans = {
        norm(decl.path): done.scan
        for decl, done in zip(m.artifacts, ev.artifacts, strict=True)
        if done is not None and done.scan is not None
    }
    return _own_scans(m, scans, ev.folders)[0]


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
