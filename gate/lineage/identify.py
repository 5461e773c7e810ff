"""`provenance-gate identify`: which known bases a model derives from, from an index of packs.

The candidate is opened once (headers; rows are read only where a pack asks for them) and its
signature computed; the index's pre-filter (index.shortlist) names the packs worth opening; each
is verified and compared with the ordinary engine, the candidate cut to the pack's rows
(sampled.Subset), exactly as a Hub base is compared from a sample. p-values are
Bonferroni-corrected over every pack of every index given, not only those compared: a large
index makes a chance match no likelier. Bases are ranked by p-value, then by agreement; none
significant is "no known base".
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gate.errors import GateError, NothingToCheck
from gate.lineage.result import DEFAULT_ALPHA, Verdict

if TYPE_CHECKING:
    from gate.hubclient import Hub
    from gate.lineage import pack, sampled
    from gate.lineage.index import Entry
    from gate.lineage.models import Model
    from gate.scanner import Scanner


@dataclasses.dataclass(frozen=True)
class Match:
    """One compared pack: its verdict, and whether the weight files are the base's own."""

    name: str
    source: str
    content_digest: str
    verdict: Verdict
    same_files: int  # candidate weight files with the SHA-256 of one of the base's

    def as_dict(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "name": self.name,
            "source": self.source,
            "content_digest": self.content_digest,
            "relation": v.relation,
            "dependent": v.dependent,
            "p_value": v.p_value,
            "log10_p": v.log10_p,
            "same_files": self.same_files,
            "summary": v.summary(),
            "effects": v.effects,
            "notes": list(v.notes),
        }


@dataclasses.dataclass(frozen=True)
class Identification:
    candidate: str
    alpha: float
    packs: int  # in every index given (the Bonferroni family)
    shortlisted: int
    bases: tuple[Match, ...]  # dependent, ranked
    others: tuple[Match, ...]  # compared and not dependent
    problems: tuple[str, ...]
    seconds: float

    @property
    def found(self) -> bool:
        return bool(self.bases)

    def as_dict(self) -> dict[str, Any]:
        return {
            "identify_version": 1,
            "candidate": self.candidate,
            "alpha": self.alpha,
            "result": "known base" if self.found else "no known base",
            "index": {"packs": self.packs, "shortlisted": self.shortlisted},
            "bases": [m.as_dict() for m in self.bases],
            "compared": [m.as_dict() for m in self.others],
            "problems": list(self.problems),
            "seconds": round(self.seconds, 3),
        }


def identify(
    candidate: str,
    indexes: Sequence[str],
    scanner: Scanner,
    alpha: float = DEFAULT_ALPHA,
    cache_dir: str | None = None,
    offline: bool = False,
) -> Identification:
    from gate.lineage.models import ModelError, model_files, open_model

    started = time.perf_counter()
    entries = load_entries(indexes, cache_dir, offline)
    if not entries:
        raise GateError(
            "the index holds no packs", hint="add packs with `provenance-gate index add`"
        )
    try:
        files, _ = model_files(candidate, candidate)
        cand = open_model(candidate)
    except ModelError as e:
        raise GateError(str(e), hint="pass a model folder or a weight file") from None
    try:
        if not cand.tensors:
            raise NothingToCheck(
                f"{candidate}: {'; '.join(cand.problems) or 'no tensors'}",
                hint="pass a folder with safetensors, GGUF or ONNX weights",
            )
        from gate import hashing

        scans = scanner.scan_many([os.path.realpath(f) for f in files])
        digests = [s.sha256 for s in scans.values() if isinstance(s, hashing.FileScan)]
        found = lookup(cand, digests, entries, alpha)
    finally:
        cand.close()
    return dataclasses.replace(found, candidate=candidate, seconds=time.perf_counter() - started)


def load_entries(
    indexes: Sequence[str], cache_dir: str | None = None, offline: bool = False
) -> list[Entry]:
    """The packs of every index (a folder, or a Hub dataset fetched into cache_dir), each
    content once (a pack in two indexes counts once)."""
    from gate.lineage import index as index_mod
    from gate.settings import default_cache_dir

    entries: dict[str, Entry] = {}
    for spec in indexes:
        path = spec
        if index_mod.is_hub_index(spec):
            path = index_mod.hub_index(spec, cache_dir or default_cache_dir(), offline)
        for e in index_mod.load(path).entries:
            entries.setdefault(e.content_digest, e)
    return list(entries.values())


def lookup(
    cand: Model, digests: Sequence[str], entries: Sequence[Entry], alpha: float = DEFAULT_ALPHA
) -> Identification:
    """Compare an opened model (weight files with these SHA-256s) with the shortlisted packs;
    p-values corrected over all the entries. The model stays open."""
    from gate.lineage import index as index_mod
    from gate.lineage import pack, relation, remote, sampled

    started = time.perf_counter()
    sig = pack.signature(cand, digests)
    short = index_mod.shortlist(entries, sig)
    matches, problems = [], list(cand.problems)
    if cand.adapter is not None:  # its factors hold none of the base's weights
        declared = cand.adapter.get("base_model_name_or_path")
        problems.append(
            "an unmerged adapter holds no base weights to identify"
            + (f" (adapter_config.json names {declared!r})" if declared else "")
            + ": identify the model it is merged into"
        )
        short = []
    for entry in short:
        if (opened := _opened(entry, problems)) is None:
            continue
        got, sample = opened
        try:
            sub = sampled.Subset(cand, sample)
            report = relation.compare(sub, [sample.model], alpha, family=len(entries))
            (v,) = remote.explain(sub, report.verdicts)
        finally:
            sample.model.close()
        matches.append(_match(entry, got, sample, v, digests))
    bases, others = _rank(matches)
    return Identification(
        cand.display,
        alpha,
        len(entries),
        len(short),
        bases,
        others,
        tuple(problems),
        time.perf_counter() - started,
    )


def _opened(entry: Entry, problems: list[str]) -> tuple[pack.Pack, sampled.Sample] | None:
    """The pack of an index entry, verified, and its sample; None (said in problems) when it
    cannot be used."""
    from gate.lineage.pack import PackError

    try:
        got = entry.open()
    except PackError as err:
        problems.append(f"{entry.name}: not compared: {err}")
        return None
    return got, got.open()


def _match(
    entry: Entry, got: pack.Pack, sample: sampled.Sample, v: Verdict, digests: Sequence[str]
) -> Match:
    """The verdict against one pack, with what the weight files' digests add."""
    from gate.lineage import remote

    same = remote.digest_match(
        {str(i): d for i, d in enumerate(digests)},
        {f["path"]: f["sha256"] for f in got.doc["files"]},
        entry.name,
    )
    if same.identical:
        v = dataclasses.replace(v, notes=(*v.notes, same.summary))
    v = dataclasses.replace(v, notes=(*v.notes, sample.summary().replace("sampled", "pack:", 1)))
    return Match(entry.name, entry.source, entry.content_digest, v, same.same)


def _rank(matches: list[Match]) -> tuple[tuple[Match, ...], tuple[Match, ...]]:
    bases = sorted(
        (m for m in matches if m.verdict.dependent),
        key=lambda m: (m.verdict.log10_p or 0.0, -_agreement(m.verdict)),
    )
    return tuple(bases), tuple(m for m in matches if not m.verdict.dependent)


def identify_hub(
    hub: Hub, uri: str, entries: Sequence[Entry], alpha: float = DEFAULT_ALPHA
) -> Identification:
    """A Hub model identified without downloading it: its headers and configuration, then, for
    each shortlisted pack, exactly the pack's rows of its tensors (range requests), compared
    with the pack's. Safetensors stored with Git LFS only (as `fingerprint hf://`)."""
    import tempfile

    from gate import hubclient, hubmodels
    from gate.lineage import pack, relation
    from gate.lineage.models import open_model
    from gate.lineage.pack import PackError

    started = time.perf_counter()
    match = hubmodels.HF_URI.match(uri)
    if match is None or not hubclient.REPO_ID.match(match["repo"]):
        raise GateError(f"not a Hub model: {uri!r}", hint="write hf://owner/name@revision")
    matches: list[Match] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="provenance-gate-identify-") as work:
        try:
            sha = hub.resolve(match["repo"], match["rev"])
            source = pack.hub_source(hub, match["repo"], sha, os.path.join(work, "head"))
        except hubclient.HubError as e:
            raise GateError(f"{uri}: {e.message}", hint=e.hint) from None
        except PackError as e:
            raise GateError(e.message) from None
        digests = [d for d, _ in source.files.values()]
        sig = pack.signature(source.model, digests)
        from gate.lineage import index as index_mod

        short = index_mod.shortlist(entries, sig)
        for k, entry in enumerate(short):
            if (opened := _opened(entry, problems)) is None:
                continue
            got, sample = opened
            try:
                rows = _rows_at(source, sample, os.path.join(work, str(k)))
                cand = open_model(rows, source.model.display)
                try:
                    full = {t.name: t.shape for t in source.model.tensors.values()}
                    cand.tensors = {
                        n: dataclasses.replace(t, full_shape=full[n])
                        for n, t in cand.tensors.items()
                    }
                    report = relation.compare(cand, [sample.model], alpha, family=len(entries))
                finally:
                    cand.close()
            except hubclient.HubError as e:
                problems.append(f"{entry.name}: not compared: {e.message}")
                continue
            finally:
                sample.model.close()
            matches.append(_match(entry, got, sample, report.verdicts[0], digests))
        source.model.close()
    bases, others = _rank(matches)
    return Identification(
        uri,
        alpha,
        len(entries),
        len(short),
        bases,
        others,
        tuple(problems),
        time.perf_counter() - started,
    )


def _rows_at(source: Any, sample: sampled.Sample, folder: str) -> str:
    """The source's rows at the sample's row indices, for every tensor that pairs with a
    sampled one (same role, layer and full shape), written with the source's configuration
    and vocabulary as a small model folder."""
    from gate.lineage import pack, sampled

    want = {(t.role, t.layer): t for t in sample.model.tensors.values()}
    out = []
    for t in source.model.tensors.values():
        s = want.get((t.role, t.layer))
        if s is None or s.full_shape != t.shape or not pack.raw(t):
            continue
        idx = sample.rows[s.name]
        dtype, data = pack.take(source, t, idx)
        shape = list(t.shape) if idx is None else [len(idx), *t.shape[1:]]
        out.append((t.name, dtype, shape, data))
    os.makedirs(folder, exist_ok=True)
    sampled.write_safetensors(os.path.join(folder, "model.safetensors"), out)
    head = os.path.join(os.path.dirname(folder), "head")
    for name in os.listdir(head):
        if name.endswith(".json"):
            shutil.copyfile(os.path.join(head, name), os.path.join(folder, name))
    return folder


def _agreement(v: Verdict) -> float:
    e = v.effects
    return max(
        e.get("exact_fraction", 0.0),
        e.get("mean_aligned_cosine", 0.0),
        e.get("mean_matched_cosine", 0.0),
    )


def render(result: Identification, fmt: str) -> str:
    import json

    from gate.text import one_line

    if fmt == "json":
        return json.dumps(result.as_dict(), indent=2) + "\n"
    lines = []
    md = fmt == "markdown"
    head = f"{'## ' if md else ''}identify {one_line(result.candidate)}"
    lines.append(head)
    lines.append("")
    lines.append(
        f"{result.packs} pack(s) in the index, {result.shortlisted} shortlisted by signature;"
        f" alpha {result.alpha:g}, Bonferroni-corrected over all {result.packs}."
    )
    lines.append("")
    if not result.found:
        lines.append("no known base: no pack in the index is a significant match")
    elif md:
        lines += ["| rank | base | relation | p | evidence |", "|---|---|---|---|---|"]
        for k, m in enumerate(result.bases, 1):
            lines.append(
                f"| {k} | {one_line(m.name)} ({one_line(m.source)}) | {m.verdict.relation} |"
                f" {_p(m.verdict)} | {one_line(m.verdict.summary())} |"
            )
    else:
        for k, m in enumerate(result.bases, 1):
            lines.append(f"{k}. {one_line(m.name)}: {m.verdict.relation}, p {_p(m.verdict)}")
            lines.append(f"   source: {one_line(m.source)}")
            lines.append(f"   {one_line(m.verdict.summary())}")
            for note in m.verdict.notes:
                lines.append(f"   note: {one_line(note)}")
    if result.others:
        lines.append("")
        names = ", ".join(f"{one_line(m.name)} ({m.verdict.relation})" for m in result.others)
        lines.append(f"compared and not dependent: {names}")
    for p in result.problems:
        lines.append(f"problem: {one_line(p)}")
    return "\n".join(lines) + "\n"


def _p(v: Verdict) -> str:
    from gate.lineage.result import EXACT_LOG10_P

    if v.p_value is None or v.log10_p is None:
        return "n/a"
    if v.log10_p <= EXACT_LOG10_P:
        return "0 (exact)"
    return f"< 1e{math.floor(v.log10_p) + 1}" if v.p_value == 0.0 else f"{v.p_value:.3g}"
