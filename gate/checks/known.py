"""Known bases: this model's weights looked up in pack indexes (policy.lineage.index and the
index bundled with the gate; docs/identify.md).

A `scratch` model must match no pack (PG513). A derived model must match no pack it does not
declare (PG514): "declared a fine-tune of A, but its weights come from B". A pack is the declared
base when it names the same Hub repository or local folder, or holds a weight file of it. A match
that a local declared base explains (the base itself derives from the pack: an ancestor) is no
finding; one that no declared base can be tested against (Hub bases are sampled, not packed) is
a warning rather than an error.

At `--lineage-depth exact`, or without the `lineage` extra, only weight files with a pack's
SHA-256 are looked for (from the index file alone: no pack is opened).
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from gate import hashing, paths, rules
from gate.errors import FormatError
from gate.evidence import Evidence, norm
from gate.findings import Finding, Location, Severity

if TYPE_CHECKING:
    from gate.lineage.index import Entry
    from gate.lineage.models import Model
    from gate.manifest import Manifest


@dataclasses.dataclass(frozen=True)
class _Known:
    """A pack the weights derive from, and what shows it."""

    entry: Entry
    relation: str
    summary: str
    details: tuple[str, ...]


def check(ev: Evidence) -> list[Finding]:
    m = ev.manifest
    if not m.policy.index and not m.policy.bundled_index and not ev.options.indexes:
        return []
    from gate.checks.lineage import own_scans
    from gate.lineage.claims import weight_tiers_available

    own = own_scans(m, ev)
    full = ev.options.lineage_depth == "full" and weight_tiers_available()
    key = _memo_key(ev, own, full)
    cached = _load(ev, key)
    if cached is not None:
        return cached
    unverified: Severity = "error" if m.policy.lineage_strict else "note"
    entries, out = _entries(ev, unverified)
    digests = _digests(own)
    if entries and (not full or _may_match(ev, own, digests, entries)):
        found: list[_Known] = []
        model = _open(ev, own) if full else None
        if model is not None:
            try:
                found = _weights(model, digests, entries)
            finally:
                model.close()
        else:
            found = _files(digests, entries)
        for k in found:
            out += _judge(ev, k, len(entries))
    _store(ev, key, out)
    return out


MEMO_KIND = "known-bases-v1"


def _memo_key(ev: Evidence, own: dict[str, hashing.FileScan], full: bool) -> bytes | None:
    """What the findings depend on: this model's weights, the manifest's bytes (the findings'
    lines), every index file named, the local base and reference folders, the depth and the
    gate's own code and data (the bundled index among them). None: not cacheable."""
    import json

    import blake3

    from gate.lineage import memo

    if ev.scanner.cache is None:
        return None
    m = ev.manifest
    root = ev.target.root
    # this model's identity from the scans the check already made (no second stat, no count)
    weights = [
        [rel, scan.pointer.oid if scan.pointer is not None else scan.sha256]
        for rel, scan in sorted(own.items())
    ]
    cand = {"weights": weights, "meta": memo.meta_identity(root)}
    try:
        with paths.open_regular(ev.target.manifest_path) as f:
            manifest = blake3.blake3(f.read()).hexdigest()
    except OSError:
        return None
    folders: dict[str, object] = {}
    named = [*m.policy.index, *(b.path for b in m.base_models if b.path), *m.policy.references]
    for rel in [*named, *ev.options.indexes]:  # a Hub index is pinned by its commit
        if os.path.isabs(rel):
            real, problem = rel, None
        else:
            real, problem = paths.resolve_inside(root, rel.rstrip("/"))
        if rel.startswith("hf://") or problem is not None:
            folders[rel] = problem or "hub"
            continue
        names = sorted(os.listdir(real)) if os.path.isdir(real) else []
        listed = [os.path.join(real, f) for f in names if f == "index.json" or _weights_file(f)]
        folders[rel] = memo.identity(listed, real, ev.scanner)
        if folders[rel] is None:
            return None
    doc = {
        "code": memo.code_digest(),
        "full": full,
        "candidate": cand,
        "manifest": manifest,
        "folders": folders,
    }
    return json.dumps(doc, sort_keys=True).encode()


def _weights_file(name: str) -> bool:
    from gate.formats import registry

    return name.endswith(registry.TENSOR_SUFFIXES)


def _load(ev: Evidence, key: bytes | None) -> list[Finding] | None:
    import json

    if key is None or ev.scanner.cache is None:
        return None
    payload = ev.scanner.cache.memo_get(MEMO_KIND, key)
    if payload is None:
        return None
    try:
        return [
            Finding(**{**d, "location": Location(**d["location"]), "details": tuple(d["details"])})
            for d in json.loads(payload)
        ]
    except (ValueError, KeyError, TypeError):
        return None


def _store(ev: Evidence, key: bytes | None, found: list[Finding]) -> None:
    import json

    if any(f.rule == "PG501" for f in found):
        return  # an index that could not be used may be usable next time (a Hub index)
    if key is not None and ev.scanner.cache is not None:
        ev.scanner.cache.memo_put(
            MEMO_KIND, key, json.dumps([dataclasses.asdict(f) for f in found])
        )


def _entries(ev: Evidence, unverified: Severity) -> tuple[list[Entry], list[Finding]]:
    """The packs of every index the manifest names and of the bundled one, each content once;
    PG501 for an index that cannot be used."""
    from gate.lineage import index as index_mod
    from gate.lineage.pack import PackError
    from gate.settings import default_cache_dir

    m = ev.manifest
    out: list[Finding] = []
    places: list[tuple[str, Location]] = []
    named = [
        (rel, m.locate("policy", "lineage", "index", i)) for i, rel in enumerate(m.policy.index)
    ]
    named += [(spec, m.locate("model", "origin")) for spec in ev.options.indexes]  # --index
    for rel, at in named:
        if index_mod.is_hub_index(rel):
            cache = ev.options.cache_dir or default_cache_dir()
            try:
                places.append((index_mod.hub_index(rel, cache, ev.options.offline), at))
            except PackError as e:
                out.append(_unusable(m, at, rel, e.message, unverified))
            continue
        real, problem = (
            (rel, None) if os.path.isabs(rel) else paths.resolve_inside(ev.target.root, rel)
        )
        if problem is not None:
            out.append(_unusable(m, at, rel, problem, unverified))
            continue
        places.append((real, at))
    if m.policy.bundled_index:
        places.append((index_mod.bundled(), m.locate("model", "origin")))
    entries: dict[str, Entry] = {}
    for place, at in places:
        try:
            for entry in index_mod.load(place).entries:
                entries.setdefault(entry.content_digest, entry)
        except PackError as err:
            rel = os.path.relpath(place, ev.target.root)
            out.append(_unusable(m, at, rel, err.message, unverified))
    return list(entries.values()), out


def _unusable(m: Manifest, at: Location, rel: str, why: str, severity: Severity) -> Finding:
    return rules.PG501.finding(
        at,
        f"pack index {rel} not used: {why}",
        declared=f"policy.lineage.index: {rel}",
        found=why,
        severity=severity,
    )


def _may_match(
    ev: Evidence, own: dict[str, hashing.FileScan], digests: list[str], entries: list[Entry]
) -> bool:
    """Whether any pack could be shortlisted, from what costs no weight library: a weight
    file's SHA-256, the vocabulary, or a matrix shape in common (the headers, read by the
    formats' own pure-Python parsers, either axis order). A superset of index.shortlist's test,
    so a model sharing nothing with any pack (the usual case) is never opened and numpy never
    imported."""
    from gate.formats import registry

    mine_files = set(digests)
    dims: set[str] = set()
    for rel, scan in own.items():
        if scan.format not in registry.TENSOR_FORMATS or scan.pointer is not None:
            continue
        real, problem = paths.resolve_inside(ev.target.root, rel)
        if problem is not None:
            continue
        try:
            shapes = hashing.header_shapes(real)
        except (OSError, FormatError):
            shapes = None
        if shapes is None:
            continue  # no readable tensor table (the format checks say why): nothing to open
        for shape in (s for s in shapes if len(s) >= 2):  # GGUF and ONNX MatMul: reversed
            dims.update(("x".join(map(str, shape)), "x".join(map(str, reversed(shape)))))
    from gate.lineage.models import read_vocab
    from gate.lineage.pack import vocab_digest

    vocab = read_vocab(ev.target.root)
    mine_vocab = vocab_digest(vocab) if vocab else None
    for e in entries:
        if mine_files & set(e.signature.files):
            return True
        if mine_vocab is not None and e.signature.vocab_digest == mine_vocab:
            return True
        if any(s.rpartition(":")[2] in dims for s in e.signature.shapes):
            return True
    return False


def _digests(own: dict[str, hashing.FileScan]) -> list[str]:
    from gate.lineage.remote import candidate_digests

    return sorted(set(candidate_digests(own).values()))


def _open(ev: Evidence, own: dict[str, hashing.FileScan]) -> Model | None:
    """This model's weights (the formats the weight tiers read), or None when none is readable
    (an LFS pointer checkout: the file digests still speak)."""
    from gate.formats import registry
    from gate.lineage import models

    files = []
    for rel, scan in sorted(own.items()):
        real, problem = paths.resolve_inside(ev.target.root, rel)
        if problem is None and scan.format in registry.TENSOR_FORMATS and scan.pointer is None:
            files.append(real)
    if not files:
        return None
    model = models.open_files(files, ev.target.root, "this model")
    if not model.tensors:
        model.close()
        return None
    return model


def _weights(model: Model, digests: list[str], entries: list[Entry]) -> list[_Known]:
    from gate.lineage import identify
    from gate.lineage.claims import _evidence_lines

    got = identify.lookup(model, digests, entries)
    by_digest = {e.content_digest: e for e in entries}
    return [
        _Known(
            by_digest[m.content_digest],
            m.verdict.relation,
            m.verdict.summary(),
            (*_evidence_lines(m.verdict), *m.verdict.notes),
        )
        for m in got.bases
    ]


def _files(digests: list[str], entries: list[Entry]) -> list[_Known]:
    mine = set(digests)
    out = []
    for e in entries:
        same = mine & set(e.signature.files)
        if not same:
            continue
        whole = same == mine and len(e.signature.files) == len(mine)
        out.append(
            _Known(
                e,
                "copy" if whole else "partial copy",
                f"{len(same)} of {len(mine)} weight files have the SHA-256 of a weight file of"
                f" {e.name} ({e.source})",
                (),
            )
        )
    return out


def _judge(ev: Evidence, k: _Known, packs: int) -> list[Finding]:
    m = ev.manifest
    e = k.entry
    where = f"known base {e.name} ({e.source}), one of {packs} packs"
    if m.origin == "scratch":
        if _names_reference(ev, e):
            return []  # the reference's own finding (PG502) says it
        return [
            rules.PG513.finding(
                m.locate("model", "origin"),
                f"origin `scratch` is contradicted by the weights: {k.relation} of {where}:"
                f" {k.summary}",
                declared="origin: scratch (no base model)",
                found=f"{k.relation} of {e.name}",
                details=k.details,
            )
        ]
    if _declared_base(ev, e) is not None:
        return []  # judged against the declared base by the lineage check
    explained, tested = _ancestor_of_a_local_base(ev, e, packs)
    if explained:
        return []
    declared = ", ".join(b.name for b in m.base_models) or "no base model"
    why = (
        "no declared base derives from it"
        if tested
        else "whether it is an ancestor of a declared Hub base cannot be told from a sample"
    )
    at = m.locate("base_models", key=True) if m.base_models else m.locate("model", "origin")
    return [
        rules.PG514.finding(
            at,
            f"the weights derive from {where}, which is not declared ({why}): {k.summary}",
            declared=f"base_models: {declared}",
            found=f"{k.relation} of {e.name}",
            details=k.details,
            severity=None if tested else "warning",
        )
    ]


def _repo_of(e: Entry) -> str | None:
    from gate import hubmodels

    match = hubmodels.HF_URI.match(e.source)
    return match["repo"] if match else None


def _folder_digests(ev: Evidence, rel: str) -> set[str]:
    from gate.lineage.models import ModelError, model_files

    real, problem = paths.resolve_inside(ev.target.root, rel.rstrip("/"))
    if problem is not None:
        return set()
    try:
        files, _ = model_files(real, rel)
    except ModelError:
        return set()
    scans = ev.scanner.scan_many([os.path.realpath(f) for f in files])
    out = set()
    for scan in scans.values():
        if isinstance(scan, hashing.FileScan):
            out.add(scan.pointer.oid if scan.pointer is not None else scan.sha256)
    return out


def _same_model(ev: Evidence, e: Entry, hub_id: str | None, path: str | None) -> bool:
    if hub_id is not None and (_repo_of(e) == hub_id or e.name == hub_id):
        return True
    if path is not None:
        if e.name == os.path.basename(norm(path)):
            return True
        return bool(_folder_digests(ev, path) & set(e.signature.files))
    return False


def _declared_base(ev: Evidence, e: Entry) -> int | None:
    for i, b in enumerate(ev.manifest.base_models):
        if _same_model(ev, e, b.id, b.path):
            return i
    return None


def _names_reference(ev: Evidence, e: Entry) -> bool:
    from gate import hubmodels

    for ref in ev.manifest.policy.references:
        match = hubmodels.HF_URI.match(ref)
        if _same_model(ev, e, match["repo"] if match else None, None if match else ref):
            return True
    return False


def _ancestor_of_a_local_base(ev: Evidence, e: Entry, packs: int) -> tuple[bool, bool]:
    """(a local declared base derives from the pack, some local declared base was tested)."""
    from gate.lineage import identify
    from gate.lineage.claims import weight_tiers_available
    from gate.lineage.models import ModelError, open_model

    if not weight_tiers_available():
        return False, False
    tested = False
    for b in ev.manifest.base_models:
        if b.path is None:
            continue
        real, problem = paths.resolve_inside(ev.target.root, b.path.rstrip("/"))
        if problem is not None:
            continue
        try:
            base = open_model(real, b.path)
        except ModelError:
            continue
        try:
            if not base.tensors:
                continue
            tested = True
            got = identify.lookup(base, sorted(_folder_digests(ev, b.path)), [e])
        finally:
            base.close()
        if got.found:
            return True, True
    return False, tested
