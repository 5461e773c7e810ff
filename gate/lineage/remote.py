"""Hub base models as lineage references: LFS digests first, the local cache next, a sample last.

1. The Hub lists each LFS file's sha256: a candidate whose weight files all have the base's
   digests is a copy, established without reading a byte of the base.
2. A base whose weight files are all in the Hugging Face cache is read there whole (each file's
   sha256 checked against the Hub's first, through the stat cache) and gets every tier.
3. Otherwise a seeded sample of rows is fetched with range requests (gate/lineage/sampled.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Sequence

from gate import hashing, pip_install, rules
from gate.errors import FormatError
from gate.findings import Finding
from gate.formats import registry
from gate.hubclient import Hub, HubError, HubFile
from gate.hubmodels import HubModel
from gate.lineage import sampled
from gate.lineage.models import Model, open_model
from gate.lineage.result import Verdict
from gate.scanner import Scanner


@dataclasses.dataclass
class HubRef:
    """One Hub model to compare with, at its pinned commit."""

    model: HubModel
    sha: str
    weights: tuple[HubFile, ...]
    sample: sampled.Sample | None = None
    problem: str | None = None  # why it could not be opened

    @property
    def repo(self) -> str:
        return self.model.repo

    @property
    def display(self) -> str:
        return f"{self.repo}@{self.sha[:12]}"


def weight_files(files: tuple[HubFile, ...]) -> tuple[HubFile, ...]:
    return tuple(
        f for f in files if f.path.endswith(registry.TENSOR_SUFFIXES) and "/" not in f.path
    )


def candidate_digests(scans: dict[str, hashing.FileScan]) -> dict[str, str]:
    """The sha256 of each candidate weight file's content (an LFS pointer's oid when the
    checkout holds pointers: equal to the Hub's LFS sha256 by construction)."""
    out = {}
    for rel, scan in scans.items():
        if scan.format in registry.TENSOR_FORMATS or rel.endswith(registry.TENSOR_SUFFIXES):
            out[rel] = scan.pointer.oid if scan.pointer is not None else scan.sha256
    return out


@dataclasses.dataclass(frozen=True)
class DigestMatch:
    """How many of the candidate's weight files have the sha256 of one of a reference's."""

    identical: bool  # every file matches, and the reference has no other weight file
    same: int
    summary: str


def digest_match(cand: dict[str, str], ref: dict[str, str], what: str) -> DigestMatch:
    """cand, ref: file -> sha256 (an LFS oid for a pointer); what: how ref's digests are known."""
    digests = set(ref.values())
    same = sum(1 for d in cand.values() if d in digests)
    identical = bool(cand) and same == len(cand) and len(digests) == len(set(cand.values()))
    return DigestMatch(
        identical,
        same,
        f"{same} of {len(cand)} weight files have the sha256 of"
        f" a weight file of {what} ({len(ref)} files)",
    )


def lfs_match(cand: dict[str, str], weights: tuple[HubFile, ...], name: str) -> DigestMatch:
    """digest_match against a Hub model's files, by the Hub's LFS digests."""
    ref = {f.path: f.sha256 for f in weights if f.sha256}
    match = digest_match(cand, ref, name)
    return dataclasses.replace(match, summary=match.summary + ", by the Hub's LFS digests")


@dataclasses.dataclass(frozen=True)
class Opened:
    """The models to compare (the candidate and each reference, cut to the same rows when any
    is a sample; None: the reference could not be opened), what opening found (PG805) and the
    Hub references that failed, with the error (None: their weights were unreadable)."""

    candidate: Model
    references: list[Model | None]
    findings: tuple[Finding, ...]
    failures: tuple[tuple[HubRef, HubError | None], ...]


def open_all(
    hub: Hub | None,
    cand: Model,
    refs: Sequence[Model | HubRef | None],
    scanner: Scanner,
    workdir: str,
) -> Opened:
    """Open the Hub references (cached whole, else sampled); when any is a sample, cut the
    candidate and every other reference to the same rows so like is compared with like."""
    seed = sampled.seed_of([r.sha for r in refs if isinstance(r, HubRef)])
    opened: list[Model | None] = []
    findings: list[Finding] = []
    failures: list[tuple[HubRef, HubError | None]] = []
    for k, ref in enumerate(refs):
        if not isinstance(ref, HubRef):
            opened.append(ref)
            continue
        try:
            if hub is None:
                raise HubError("offline", f"needs `{pip_install('hub')}`")
            folder = os.path.join(workdir, str(k))
            if cand.adapter is not None:  # an adapter is checked against shapes only
                opened.append(sampled.header_model(hub, ref.repo, ref.sha, folder))
                continue
            cached, refused = _cached(hub, ref, scanner)
            findings += refused
            if cached is not None:  # every file in the Hugging Face cache: the whole model
                opened.append(open_model(cached, ref.display))
            else:
                ref.sample = sampled.fetch(hub, ref.repo, ref.sha, seed, folder)
                opened.append(ref.sample.model)
        except HubError as e:
            ref.problem = e.message
            failures.append((ref, e))
            opened.append(None)
        except FormatError as e:
            ref.problem = f"the model's weights are unreadable: {e}"
            failures.append((ref, None))
            opened.append(None)
    sample = next((r.sample for r in refs if isinstance(r, HubRef) and r.sample), None)
    if sample is not None:
        cand = sampled.Subset(cand, sample)
        opened = [
            m
            if m is None or (isinstance(r, HubRef) and r.sample is not None)
            else sampled.Subset(m, sample)
            for m, r in zip(opened, refs, strict=True)
        ]
    return Opened(cand, opened, tuple(findings), tuple(failures))


def explain(cand: Model, verdicts: Sequence[Verdict]) -> list[Verdict]:
    """What a sample could not compare, said in the verdicts: tensors whose shapes differ from
    the base's were left out; when all of them are narrower, the model is width-pruned (as the
    whole-model engine would say from the same shapes)."""
    reshaped = getattr(cand, "reshaped", None)
    if not reshaped:
        return list(verdicts)
    narrower = all(
        len(c) == len(r) and all(a <= b for a, b in zip(c, r, strict=True)) and c != r
        for c, r in reshaped.values()
    )
    shapes = [f"{k} {list(c)} vs {list(r)}" for k, (c, r) in sorted(reshaped.items())]
    note = (
        f"{len(reshaped)} tensor role(s) differ in shape from the base and were not sampled: "
        + ", ".join(shapes[:4])
    )
    out = []
    for v in verdicts:
        if narrower and v.relation in ("copy", "finetune"):
            widths = {k: [c, r] for k, (c, r) in reshaped.items()}
            pruned = [f"{k} {list(r)}->{list(c)}" for k, (c, r) in sorted(reshaped.items())]
            summary = "width pruned: " + ", ".join(pruned)
            details = {**v.details, "widths": widths, "summary": summary}
            v = dataclasses.replace(v, relation="pruned", details=details)
        out.append(dataclasses.replace(v, notes=(*v.notes, note)))
    return out


def _cached(hub: Hub, ref: HubRef, scanner: Scanner) -> tuple[str | None, list[Finding]]:
    """The snapshot folder of the model in the Hugging Face cache when every weight file is
    there with the Hub's LFS digest (None: not all cached, or PG805 for a copy that differs)."""
    local = [hub.local_file(ref.repo, ref.sha, f.path) for f in ref.weights]
    if not ref.weights or any(p is None for p in local):
        return None, []
    reals = [os.path.realpath(p) for p in local if p is not None]
    scans = scanner.scan_many(reals)
    for f, real in zip(ref.weights, reals, strict=True):
        scan = scans[real]
        got = scan.sha256 if isinstance(scan, hashing.FileScan) else f"unreadable ({scan})"
        if got != f.sha256:
            refused = rules.PG805.finding(
                ref.model.at,
                f"{ref.repo}/{f.path}: the Hugging Face cache holds other bytes than"
                f" the Hub's at {ref.sha[:12]}; the cached copy was not used",
                declared=f"LFS sha256 {f.sha256}",
                found=f"cached: {got}",
            )
            return None, [refused]
    for name in ("config.json", "tokenizer.json", "vocab.json"):
        # into the same snapshot folder; offline, the structure tier has less to compare
        with contextlib.suppress(HubError):
            hub.read_small(ref.repo, ref.sha, name)
    return os.path.dirname(local[0] or ""), []
