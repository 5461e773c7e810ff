"""`init` and `lock`: write sizes and digests into a hand-written manifest without disturbing it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Callable
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from gate import card, lockfile, paths, yamlio
from gate.checks import report
from gate.checks.artifacts import effective_format
from gate.evidence import (
    Options,
    Target,
    gather,
    in_folders,
    other_models,
    prefetch,
    weight_files,
)
from gate.findings import Finding, Report
from gate.formats import registry, sniff
from gate.hubclient import REPO_ID
from gate.manifest import DEFAULT_FORMATS, Manifest, parse, read_bytes
from gate.scanner import Scanner
from gate.settings import Settings

_FIELD_ORDER = ("path", "size", "sha256", "tensors_digest", "format")
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9._/+-]*$")
_YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}
_RELATIONS = {"finetune", "adapter", "merge", "quantized", "distill"}
# What keeps a declared file from being locked (its path, its bytes, its LFS pointer).
_UNLOCKABLE = frozenset({"PG201", "PG202", "PG210", "PG211", "PG212", "PG213"})
_HEADER_RULES = frozenset(s.header_rule for s in registry.SPECS if s.header_rule)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What init/lock did: the findings (as a report), one line per change written, what a
    person should review (init), and the format each locked artifact was recorded as."""

    report: Report
    changes: tuple[str, ...]
    written: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    formats: dict[str, str] = dataclasses.field(default_factory=dict)


def lock(
    target: Target, scanner: Scanner | None = None, settings: Settings | None = None
) -> Outcome:
    """Refresh size, sha256 and tensor digest of every declared artifact, and the lock file."""
    data = read_bytes(target.manifest_path, target.manifest_display)
    scanner = scanner or Scanner()
    try:
        manifest, problems = parse(
            data, target.manifest_display, early=prefetch(target, scanner, all_tensors=True)
        )
        if manifest is None:
            return Outcome(report(target, problems, (), "error", manifest_invalid=True), (), ())
        return _lock_text(target, data.decode("utf-8"), manifest, (), scanner=scanner)
    finally:
        scanner.cancel()


def init(
    target: Target, scanner: Scanner | None = None, settings: Settings | None = None
) -> Outcome:
    """Scaffold a manifest (or extend an existing one) with every weight file, then lock it."""
    existing = os.path.exists(target.manifest_path)
    warnings: list[str] = []
    if existing:
        text = read_bytes(target.manifest_path, target.manifest_display).decode("utf-8")
    else:
        text, warnings = scaffold(target.root, _pinner(settings))
    manifest, problems = parse(text.encode("utf-8"), target.manifest_display)
    if manifest is None:
        written: tuple[str, ...] = ()
        if not existing:  # the scaffold needs a human decision: write it, point at the line
            paths.atomic_write(target.manifest_path, text)
            written = (target.manifest_display,)
        return Outcome(report(target, problems, (), "error", manifest_invalid=True), (), written)
    signed = _signed_digests(target.root, manifest.policy.signature.file, warnings)
    declared = {os.path.normpath(a.path) for a in manifest.artifacts}
    skip = other_models(manifest)
    candidates = [
        rel
        for rel in paths.walk_files(target.root, skip=skip)
        if os.path.normpath(rel) not in declared
    ]
    new = list(weight_files(target.root, candidates, paths.GlobSet(manifest.ignore)))
    created = () if existing else ("created " + target.manifest_display,)
    if not new:
        done = _lock_text(
            target,
            text,
            manifest,
            created,
            force_write=not existing,
            scanner=scanner,
            signed=(signed, warnings),
        )
        scaffolded = [] if existing else [a.path for a in manifest.artifacts]
        return _reviewed(done, manifest, scaffolded, warnings)
    doc, _, _ = yamlio.load(text)
    seq = doc.get("artifacts")
    if not isinstance(seq, CommentedSeq):
        seq = CommentedSeq()
        doc["artifacts"] = seq
    seq.fa.set_block_style()
    for rel in new:
        seq.append(CommentedMap([("path", rel)]))
    text2 = yamlio.dump(doc, like=text)
    manifest, problems = parse(text2.encode("utf-8"), target.manifest_display)
    assert manifest is not None, problems  # we only appended schema-valid entries
    changes = (*created, *(f"{rel}: declared" for rel in new))
    done = _lock_text(
        target,
        text2,
        manifest,
        changes,
        force_write=True,
        scanner=scanner,
        signed=(signed, warnings),
    )
    scaffolded = [] if existing else [a.path for a in manifest.artifacts]
    return _reviewed(done, manifest, [*scaffolded, *new], warnings)


def _reviewed(
    done: Outcome, manifest: Manifest, declared: list[str], warnings: list[str]
) -> Outcome:
    """init's outcome with a warning for each file it declared that the policy will refuse."""
    allowed = manifest.policy.allowed_formats
    for rel in dict.fromkeys(declared):
        fmt = done.formats.get(rel)
        if fmt is not None and fmt != "other" and fmt not in allowed:
            warnings.append(
                f"{rel}: declared, but `check` will refuse it: format {fmt} is not in"
                f" policy.allowed_formats ({', '.join(allowed)})"
                + (
                    "; a pickle can run code when loaded: convert it to safetensors"
                    if fmt == "pickle"
                    else ""
                )
            )
    return dataclasses.replace(done, warnings=tuple(warnings))


def _lock_text(
    target: Target,
    text: str,
    manifest: Manifest,
    changes_before: tuple[str, ...],
    *,
    force_write: bool = False,
    scanner: Scanner | None = None,
    signed: tuple[dict[str, str], list[str]] | None = None,
) -> Outcome:
    """signed (init): SHA-256s a model.sig signed, by path, and where to warn when a file's
    differs (the manifest then declares the signed digest: `check` fails until they agree)."""
    doc, _, _ = yamlio.load(text)
    ev = gather(target, manifest, Options(), scanner or Scanner(), all_tensors=True)
    old = ev.locked
    changes = list(changes_before)
    findings: list[Finding] = []
    entries: dict[str, dict[str, Any]] = {}
    for decl, done in zip(manifest.artifacts, ev.artifacts, strict=True):
        item = doc["artifacts"][decl.index]
        if done is None:  # a duplicate entry: `check` reports it
            continue
        scan = done.scan
        # the same verification as `check`: what keeps a file from being locked is said alike
        unusable = [f for f in done.findings if f.rule in _UNLOCKABLE]
        if scan is None or unusable:
            findings.extend(unusable)
            continue
        # an invalid header is recorded all the same: `check` keeps failing on it
        findings.extend(f for f in done.findings if f.rule in _HEADER_RULES)
        real, _ = paths.resolve_inside(target.root, decl.path)
        entry = lockfile.entry(scan)
        if scan.pointer is None:  # a pickle by content is recorded as one, as `check` reports it
            with contextlib.suppress(OSError):
                entry["format"] = effective_format(scan.format, ev.scanner.loads(real, decl.path))
        if (
            scan.pointer is not None
            and old
            and decl.path in old
            and old[decl.path].sha256 == scan.pointer.oid
        ):
            entry = _old_entry(old[decl.path], entry)
        entries[decl.path] = entry
        updates = {"size": entry["size"], "sha256": entry["sha256"]}
        signed_sha = signed[0].get(os.path.normpath(decl.path)) if signed is not None else None
        if signed is not None and signed_sha is not None and signed_sha != entry["sha256"]:
            updates["sha256"] = signed_sha
            signed[1].append(
                f"{decl.path}: its sha256 ({entry['sha256']}) is not the one model.sig signed;"
                " the manifest declares the signed digest, so `check` fails until the file is"
                " restored or the model signed again"
            )
        if "tensors_digest" in entry:
            updates["tensors_digest"] = entry["tensors_digest"]
        elif scan.pointer is None and scan.header_error is None and "tensors_digest" in item:
            del item["tensors_digest"]  # the content has no tensor table any more
            changes.append(f"{decl.path}: tensors_digest removed (no tensors in {scan.format})")
        for key, value in updates.items():
            before = item.get(key)
            if before != value:
                _set(item, key, value)
                changes.append(
                    f"{decl.path}: {key} {before if before is not None else '(none)'} -> {value}"
                )
    out_text = yamlio.dump(doc, like=text)
    written: list[str] = []
    if out_text != text or force_write or not os.path.exists(target.manifest_path):
        paths.atomic_write(target.manifest_path, out_text)
        written.append(target.manifest_display)
    if entries or not findings:
        previous = _read_text(ev.lock_file)
        lockfile.write(ev.lock_file, entries)
        if _read_text(ev.lock_file) != previous:
            written.append(os.path.relpath(ev.lock_file, target.root))
    formats = {path: str(entry.get("format", "other")) for path, entry in entries.items()}
    return Outcome(
        report(target, findings, (), "error"), tuple(changes), tuple(written), formats=formats
    )


def _old_entry(old: lockfile.LockedArtifact, fresh: dict[str, Any]) -> dict[str, Any]:
    """Keep per-tensor detail recorded from content when only the LFS pointer is present now."""
    out = dict(fresh)
    out["format"] = old.format
    if old.tensors is not None:
        out["tensors_digest"] = old.tensors_digest
        out["tensors"] = {n: lockfile.tensor_entry(t) for n, t in sorted(old.tensors.items())}
    return out


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _set(item: CommentedMap, key: str, value: Any) -> None:
    """Set key, inserting a new key after its predecessors in the canonical field order."""
    if key in item:
        item[key] = value
        return
    rank = _FIELD_ORDER.index(key)
    pos = 0
    for i, existing in enumerate(item):
        if existing in _FIELD_ORDER and _FIELD_ORDER.index(existing) < rank:
            pos = i + 1
    item.insert(pos, key, value)


def _q(value: str) -> str:
    if _PLAIN.match(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value, ensure_ascii=False)


Pin = Callable[[str], "tuple[str | None, str | None]"]


def _pinner(settings: Settings | None) -> Pin:
    """Looks up a Hub model's current commit for the scaffold: (sha, None) or (None, why not)."""
    from gate import hubclient

    if not hubclient.available():
        return lambda repo: (None, "the `hub` extra (huggingface_hub) is not installed")

    def pin(repo: str) -> tuple[str | None, str | None]:
        try:
            return hubclient.HubClient(settings).resolve(repo, None), None
        except hubclient.HubError as e:
            return None, e.message

    return pin


def model_folders(root: str, weights: list[str]) -> tuple[str, ...]:
    """Sub-folders holding another model (their own config.json beside weight files) while the
    repository has weights of its own outside them: a vendored base or a reference kept for the
    lineage check, never this model's artifacts. Empty when every weight lies in such folders (a
    repository of several variants): then they are all the repository's own."""
    folders = sorted({os.path.dirname(w) for w in weights} - {""})
    found: list[str] = []
    for folder in folders:
        parts = folder.split("/")
        tops = ["/".join(parts[: k + 1]) for k in range(len(parts))]
        top = next((t for t in tops if os.path.isfile(os.path.join(root, t, "config.json"))), None)
        if top is not None and top not in found:
            found.append(top)
    own = [w for w in weights if not in_folders(w, tuple(found))]
    return tuple(found) if own else ()


def _allowed(root: str, own: list[str]) -> list[str]:
    """The default formats plus every other format found among the model's own files whose
    loading cannot run code (a scaffold never fails on its own policy for data; a pickle stays
    refused, with init's warning saying why)."""
    found = {sniff.sniff_file(os.path.join(root, rel)) for rel in own}
    extra = sorted(
        f
        for f in found
        if f is not None and f not in DEFAULT_FORMATS and f != "other"
        if not registry.BY_NAME[f].executes
    )
    return [*DEFAULT_FORMATS, *extra]


def _signed_digests(root: str, rel: str, warnings: list[str]) -> dict[str, str]:
    """The whole-file SHA-256s an OpenSSF model signature at rel signed, by normalised path
    (none when there is no signature; a warning when it cannot be used)."""
    from gate import signature

    real, problem = paths.resolve_inside(root, rel)
    if problem is not None or not os.path.lexists(real):
        return {}
    try:
        signed = signature.read(real)
    except (signature.SignatureError, OSError) as e:
        warnings.append(f"{rel}: not used, not a readable model signature ({e})")
        return {}
    out = {
        os.path.normpath(r.path): r.digest
        for r in signed.resources
        if r.algorithm == "sha256" and r.start is None
    }
    if not out:
        warnings.append(
            f"{rel}: signed by {signed.resources[0].algorithm if signed.resources else 'nothing'}"
            f"{' shards' if signed.method == 'shards' else ''}, not whole-file SHA-256: the"
            " manifest's digests come from the files (`check` compares them with it)"
        )
    return out


def scaffold(root: str, pin: Pin | None = None) -> tuple[str, list[str]]:
    """A new manifest's text from the folder name and the README front matter, and warnings for
    what a person must decide; pin: the current commit of a Hub model (or why it is unknown)."""
    fm = card.front_matter(root, "README.md") or {}
    warnings: list[str] = []
    name = str(fm.get("model_name") or os.path.basename(root) or "model")
    lines = [
        "# provenance.yaml: what this repository declares about its weights.",
        "# `provenance-gate check` verifies it; `provenance-gate lock` refreshes its digests.",
        "version: 1",
        "model:",
        f"  name: {_q(name)}",
    ]
    lic = fm.get("license")
    if isinstance(lic, str) and lic:
        lines.append(f"  license: {_q(lic)}  # from README.md front matter")
    else:
        lines.append("  license: unknown  # README.md front matter has no license: set it")
        warnings.append("model.license: unknown (README.md front matter has no `license`): set it")
    for key in ("license_name", "license_link"):
        if isinstance(fm.get(key), str) and fm[key]:
            lines.append(f"  {key}: {_q(fm[key])}")
    bases, _ = card.strings(fm.get("base_model"))
    relation = fm.get("base_model_relation")
    if bases:
        lines.append("  origin: derived  # README.md front matter names a base_model")
        hub = [b for b in bases if REPO_ID.match(b)]
        lines.append("base_models:" if hub else "base_models: []")
        for b in bases:
            if b not in hub:
                lines.append(f"  # - {json.dumps(b)}: in the card but not a Hub id; declare it")
                warnings.append(f"base model {b!r} (README.md) is not a Hub id: declare it")
        for b in hub:
            lines.append(f"  - id: {_q(b)}")
            sha, why = pin(b) if pin is not None else (None, "not looked up")
            if sha:
                lines.append(f"    revision: {sha}  # {b}@main when this file was written")
            else:
                lines.append("    # revision: the base's full commit sha on the Hub (required)")
                warnings.append(
                    f"base model {b}: its current commit could not be looked up ({why}); set"
                    " `revision:` to the full commit sha you derived from (`check` requires it)"
                )
            if relation in _RELATIONS:
                lines.append(f"    relation: {relation}  # from base_model_relation")
            else:
                lines.append("    relation: finetune  # not in the card: confirm")
                warnings.append(
                    f"base model {b}: README.md has no base_model_relation; `relation: finetune`"
                    " written: confirm it"
                )
    else:
        lines.append("  origin: scratch  # no base_model in README.md; the gate tests this claim")
        warnings.append(
            "model.origin: scratch, because README.md front matter names no base_model; if this"
            " model was derived from another, set `origin: derived` and declare `base_models`"
        )
    weights = list(weight_files(root, list(paths.walk_files(root))))
    others = model_folders(root, weights)
    own = [w for w in weights if not in_folders(w, others)]
    if own:
        lines.append("artifacts:")
        lines.extend(f"  - path: {_q(rel)}" for rel in own)
    lines.append("policy:")
    lines.append(f"  allowed_formats: [{', '.join(_allowed(root, own))}]")
    if os.path.isfile(os.path.join(root, "model.sig")):
        lines.append("  signature: required  # model.sig is here: `check` compares its digests")
    if others:
        lines += [
            "  lineage:",
            "    # folders holding another model (their own config.json): compared with this",
            "    # model, never declared as its artifacts. If this model derives from one, move",
            "    # it to base_models as `path:` with its relation.",
            "    references: [" + ", ".join(_q(f) for f in others) + "]",
        ]
        warnings.extend(
            f"{f}/ holds another model (its own config.json): listed in"
            " policy.lineage.references, its weights not declared as artifacts"
            for f in others
        )
    return "\n".join(lines) + "\n", warnings
