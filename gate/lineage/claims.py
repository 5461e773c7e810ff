"""Check the manifest's lineage claims against the weights.

Tier 0 (exact digests from the cached scan) is always available. The weight tiers (aligned and
permutation-robust tests, relation diagnostics) need numpy/scipy/ml_dtypes/gguf, the `lineage`
extra; without it the findings say which claims were only checked for exact copies.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from gate import hashing, hubmodels, paths, pip_install, rules
from gate.findings import BaseLineage, Finding, Location, Severity
from gate.formats import registry
from gate.hubmodels import HubBases
from gate.lineage import exact
from gate.lineage.remote import (
    HubRef,
    candidate_digests,
    digest_match,
    lfs_match,
    weight_files,
)
from gate.lineage.result import DEFAULT_ALPHA, EXACT_LOG10_P, Verdict, format_p
from gate.manifest import BaseModel, Manifest
from gate.scanner import Scanner

if TYPE_CHECKING:
    from gate.lineage.models import Model

LineageDepth = Literal["full", "exact"]
_TIER0_ONLY = (
    "only exact copies were looked for: the weight-similarity tiers (fine-tunes, merges,"
    f" quantization, permutation) need `{pip_install('lineage')}`"
)
_TIER0_ASKED = "only exact copies were looked for (--lineage-depth exact)"
# declared relation -> relations found in the weights that are consistent with it. A merge with
# one local parent looks like a fine-tune, and a merged adapter is a (low-rank) fine-tune.
ACCEPTS: dict[str, frozenset[str]] = {
    "copy": frozenset({"copy"}),
    "finetune": frozenset({"finetune", "merge"}),
    "merge": frozenset({"merge", "finetune"}),
    "quantized": frozenset({"quantized"}),
    "pruned": frozenset({"pruned"}),
    "adapter": frozenset({"adapter"}),
    "distill": frozenset(),  # not tested by weights (judge_base, _base_tier0)
}
MERGE_WEIGHT_TOLERANCE = 0.05
_ASKED = "policy.lineage.probe: true"


_WEIGHT_TIER_MODULES = ("gguf", "ml_dtypes", "numpy", "scipy", "threadpoolctl")


def weight_tiers_available() -> bool:
    """Whether the `lineage` extra is installed: found, not imported (importing numpy, scipy
    and ml_dtypes costs about a second; a check that runs no weight tier imports none)."""
    return all(_installed(m) for m in _WEIGHT_TIER_MODULES)


def _installed(name: str) -> bool:
    if name in sys.modules:  # None there: blocked, as Python's import system treats it
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check(
    root: str,
    manifest: Manifest,
    scans: dict[str, hashing.FileScan],
    scanner: Scanner,
    extra: Sequence[hashing.TensorDigest] = (),
    unread: Sequence[str] = (),
    depth: LineageDepth = "full",
    hubs: HubBases | None = None,
    cache_dir: str | None = None,
    outcomes: dict[int, BaseLineage] | None = None,
) -> list[Finding]:
    """Findings for the scratch claim and for each declared base model (cache_dir: the gate's
    cache, where the probe keeps its calibration; None: the default). outcomes, when given,
    receives what the weights showed about each declared base (by index), agreeing or not.

    extra: tensors read from other formats (torch checkpoints); unread: weight files whose
    tensors could not be read, with the reason (the evidence is then partial, and says so).
    """
    if manifest.origin == "scratch" and not manifest.policy.references:
        indexed = manifest.policy.index or manifest.policy.bundled_index
        return [
            rules.PG511.finding(
                manifest.locate("model", "origin"),
                "the `scratch` claim was tested only against the known bases of the pack"
                " index(es)"
                + (
                    ""
                    if depth == "full" and weight_tiers_available()
                    else ", by their weight files' SHA-256 alone"
                )
                + ": no reference models are listed in policy.lineage.references"
                if indexed
                else "the `scratch` claim was not tested: no reference models are listed in"
                " policy.lineage.references",
                declared="origin: scratch",
                found="no references",
                severity="error" if manifest.policy.lineage_strict else None,
            )
        ]
    candidate = [t for s in scans.values() if s.tensors for t in s.tensors] + list(extra)
    missing = [
        p for p, s in scans.items() if s.tensors is None and s.format in registry.TENSOR_FORMATS
    ]
    gaps = [
        f"{p}: a Git LFS pointer, content not checked out"
        if scans[p].pointer is not None
        else f"{p}: not readable as tensors"
        for p in sorted(missing)
    ] + list(unread)
    unverified: Severity = "error" if manifest.policy.lineage_strict else "note"
    if not candidate:
        why = "no tensors to compare" + (f" ({'; '.join(gaps)})" if gaps else "")
        if unverified == "note" and any(s.pointer is not None for s in scans.values()):
            unverified = "warning"  # a checkout of LFS pointers: lineage saw no weight at all
        ctx = _Context(
            root, manifest, scans, scanner, [], unverified, "exact", hubs, cache_dir, outcomes
        )
        ctx.why_tier0 = f"this model has {why}"
        return ctx.digests_only(why)
    out: list[Finding] = []
    if gaps:
        out.append(_not_checked(manifest, "evidence is partial: " + "; ".join(gaps), unverified))
    ctx = _Context(
        root, manifest, scans, scanner, candidate, unverified, depth, hubs, cache_dir, outcomes
    )
    if manifest.origin == "scratch":
        return out + ctx.scratch()
    return out + ctx.bases()


def _not_checked(manifest: Manifest, why: str, severity: Severity) -> Finding:
    return rules.PG501.finding(
        manifest.locate("model", "origin"),
        f"lineage not checked: {why}",
        declared=f"origin: {manifest.origin}",
        found=f"not checked: {why}",
        severity=severity,
    )


class _Context:
    def __init__(
        self,
        root: str,
        manifest: Manifest,
        scans: dict[str, hashing.FileScan],
        scanner: Scanner,
        candidate: list[hashing.TensorDigest],
        unverified: Severity,
        depth: LineageDepth,
        hubs: HubBases | None = None,
        cache_dir: str | None = None,
        outcomes: dict[int, BaseLineage] | None = None,
    ) -> None:
        self.root, self.manifest, self.scans, self.scanner = root, manifest, scans, scanner
        self.cache_dir = cache_dir
        self.hubs = hubs or HubBases(manifest, None)
        self.candidate, self.unverified = candidate, unverified
        self.full = depth == "full" and weight_tiers_available()
        self.why_tier0 = _TIER0_ASKED if depth == "exact" else _TIER0_ONLY
        self.outcomes = outcomes if outcomes is not None else {}

    def record(
        self,
        base: BaseModel,
        found: str | None,
        summary: str,
        log10_p: float | None = None,
        exact: bool = False,
    ) -> None:
        """What the weights showed about a declared base, agreeing with it or not."""
        i = self.manifest.base_models.index(base)
        self.outcomes[i] = BaseLineage(
            name=base.name,
            relation=base.relation,
            hub=base.id is not None,
            revision=base.revision,
            license=base.license,
            found=found,
            log10_p=EXACT_LOG10_P if exact else log10_p,
            exact=exact,
            summary=summary,
        )

    # ------------------------------------------------------------------ scratch
    def scratch(self) -> list[Finding]:
        refs = self.manifest.policy.references
        out: list[Finding] = []
        usable: list[tuple[str, exact.ExactEvidence | None, str | HubRef]] = []
        for k, ref in enumerate(refs):
            model = hubmodels.of_reference(self.manifest, k, ref)
            if model is not None:
                hub_ref, found = self._hub_ref(model, None)
                out += found
                if hub_ref is not None:
                    usable.append((ref, None, hub_ref))
                continue
            tensors, problems = exact.collect(self.root, ref, self.scanner)
            if not tensors:
                settled = self._by_file_digest(ref, None)
                out += (
                    settled
                    if settled is not None
                    else [
                        _not_checked(
                            self.manifest,
                            f"reference {ref} unreadable: {'; '.join(problems)}",
                            self.unverified,
                        )
                    ]
                )
                continue
            usable.append((ref, exact.compare(self.candidate, tensors, ref), ref))
        at = self.manifest.locate("model", "origin")
        if not self.full:
            return out + [self._scratch_tier0(at, ref, ev) for ref, ev, _ in usable if ev]
        tier0 = {ref: ev for ref, ev, _ in usable if ev}
        verdicts, found = self._compare([src for _, _, src in usable], tier0)
        out += found
        refs = self.manifest.policy.references
        where = [
            self.manifest.locate("policy", "lineage", "references", refs.index(r))
            for r, _, _ in usable
        ]
        out += self._probe(list(zip([s for _, _, s in usable], verdicts, where, strict=True)))
        for (ref, ev, src), verdict in zip(usable, verdicts, strict=True):
            if (
                isinstance(src, HubRef)
                and src.sample is not None
                and verdict is not None
                and (not verdict.dependent)
            ):  # independence from a sample: say how little was seen
                out.append(self._sampled_note(0, None, src, verdict))
            if ev is not None and ev.matched and (verdict is None or not verdict.dependent):
                # exact matches found in files the weight tiers cannot open (torch checkpoints)
                out.append(self._scratch_tier0(at, ref, ev))
            elif verdict is None or verdict.relation == "inconclusive":
                why = (
                    verdict.notes[0]
                    if verdict is not None and verdict.notes
                    else (src.problem if isinstance(src, HubRef) and src.problem else "no model")
                )
                out.append(_not_checked(self.manifest, f"against {ref}: {why}", self.unverified))
            elif verdict.dependent:
                also = f"; {ev.summary()}" if ev is not None and ev.matched else ""
                sample = _sample_lines(src)
                exact_lines = ev.detail_lines() if ev else ()
                out.append(
                    rules.PG502.finding(
                        at,
                        f"origin `scratch` is contradicted by the weights: {verdict.summary()}"
                        + also,
                        declared="origin: scratch (no base model)",
                        found=verdict.summary(),
                        details=(*_evidence_lines(verdict), *sample, *exact_lines),
                        hint=_SIBLING_HINT.replace("the declared base", str(ref))
                        if verdict.relation == "sibling"
                        else f"declare `origin: derived` with base_models: [{_base_entry(src)},"
                        f" relation: {verdict.relation}}}] and the base model's license",
                    )
                )
        return out

    def _scratch_tier0(self, at: Location, ref: str, ev: exact.ExactEvidence) -> Finding:
        if ev.matched:
            return rules.PG502.finding(
                at,
                f"origin `scratch` is contradicted by the weights: {ev.summary()}",
                declared="origin: scratch (no base model)",
                found=ev.summary(),
                details=ev.detail_lines(),
                hint=f"declare `origin: derived` with base_models: [{{path: {ref}, relation:"
                f" {'copy' if ev.all_matched else 'merge'}}}] and the base model's license",
            )
        return rules.PG501.finding(
            at,
            f"no tensor is bit-identical to {ref}; {self.why_tier0}, so independence from it"
            " is not established",
            declared="origin: scratch",
            found=f"0 of {ev.candidate_tensors} weight tensors identical to {ref}",
            severity=self.unverified,
        )

    # ------------------------------------------------------------------ declared bases
    def bases(self) -> list[Finding]:
        out: list[Finding] = []
        local: list[tuple[int, BaseModel, exact.ExactEvidence | None, str | HubRef]] = []
        for i, base in enumerate(self.manifest.base_models):
            if base.path is None:
                ref, found = self._hub_ref(hubmodels.of_base(self.manifest, i, base), base)
                out += found
                if ref is not None:
                    local.append((i, base, None, ref))
                continue
            tensors, problems = exact.collect(self.root, base.path, self.scanner)
            if not tensors:
                settled = self._by_file_digest(base.path, (i, base))
                out += settled if settled is not None else [self._base_unusable(i, base, problems)]
                continue
            local.append((i, base, exact.compare(self.candidate, tensors, base.name), base.path))
        if not self.full:
            return out + [f for i, b, ev, _ in local if ev for f in self._base_tier0(i, b, ev)]
        tier0 = {src: ev for _, _, ev, src in local if isinstance(src, str) and ev}
        verdicts, found = self._compare([src for _, _, _, src in local], tier0)
        out += found
        where = [self.manifest.locate("base_models", i) for i, _, _, _ in local]
        # a distilled student imitates its teacher's outputs with weights of its own: the
        # probe agreeing where the weights do not is what distillation looks like (no PG510)
        weighed = [
            None if b.relation == "distill" else v
            for (_, b, _, _), v in zip(local, verdicts, strict=True)
        ]
        out += self._probe(list(zip([s for *_, s in local], weighed, where, strict=True)))
        for (i, base, ev, src), verdict in zip(local, verdicts, strict=True):
            if isinstance(src, HubRef) and (verdict is None or verdict.relation == "inconclusive"):
                why = verdict.notes[0] if verdict is not None and verdict.notes else src.problem
                self.record(base, None, why or "no usable weights")
                out.append(self._hub_not_verified(src.model, base, why or "no usable weights"))
            elif verdict is None or verdict.relation == "inconclusive":
                why = (
                    verdict.notes[0]
                    if verdict is not None and verdict.notes
                    else "the weight tiers could not open the base model"
                )
                assert ev is not None
                out.extend(self._base_tier0(i, base, ev, why))
            else:
                exact_p = verdict.log10_p is not None and verdict.log10_p <= EXACT_LOG10_P
                self.record(base, verdict.relation, verdict.summary(), verdict.log10_p, exact_p)
                out.extend(judge_base(self.manifest, i, base, ev, verdict))
                if isinstance(src, HubRef) and src.sample is not None:
                    out.append(self._sampled_note(i, base, src, verdict))
        return out

    # ------------------------------------------------------------------ tier 4, when asked for
    def _probe(
        self, compared: list[tuple[str | HubRef, Verdict | None, Location]]
    ) -> list[Finding]:
        """The logit probe against every local folder compared (policy.lineage.probe): its
        figures as a note, a warning where it disagrees with the weights; never an error."""
        if not self.manifest.policy.probe:
            return []
        from gate.lineage import probe
        from gate.lineage.service import disagreement

        local = [(src, v, at) for src, v, at in compared if isinstance(src, str)]
        if not probe.available():
            return [
                rules.PG509.finding(
                    at,
                    "logit probe not run: it needs torch and transformers",
                    declared=_ASKED,
                    found="not run",
                    hint=probe.EXTRA_HINT,
                )
                for _, _, at in local
            ]
        out: list[Finding] = []
        try:
            results = probe.run(
                self.root,
                [paths.resolve_inside(self.root, s)[0] for s, _, _ in local],
                cache_dir=self.cache_dir,
            )
        except probe.ProbeError as e:
            return [
                rules.PG509.finding(
                    at, f"logit probe not run: {e.message}", declared=_ASKED, found="not run"
                )
                for _, _, at in local
            ]
        for (src, v, at), got in zip(local, results, strict=True):
            if isinstance(got, str):
                out.append(
                    rules.PG509.finding(
                        at,
                        f"logit probe against {src} not run: {got}",
                        declared=_ASKED,
                        found="not run",
                    )
                )
                continue
            out.append(
                rules.PG509.finding(
                    at,
                    f"against {src}: {got.summary()}",
                    declared=_ASKED,
                    found=got.summary(),
                    details=tuple(
                        f"{f.id} ({f.lang}): cosine {f.cosine:.4f}, top-1"
                        f" {f.top1:.3f}, KL {f.kl:.4f}, {f.positions}"
                        " positions"
                        for f in got.prompts
                    ),
                )
            )
            said = disagreement(v, got) if v is not None else None
            if said:
                out.append(
                    rules.PG510.finding(
                        at,
                        f"against {src}: {said}",
                        declared=v.summary() if v else None,
                        found=got.summary(),
                    )
                )
        return out

    def _base_unusable(self, i: int, base: BaseModel, problems: list[str]) -> Finding:
        return rules.PG501.finding(
            self.manifest.locate("base_models", i),
            f"{base.name}: base weights unusable ({'; '.join(problems)}); relation not checked",
            declared=f"{base.relation} of {base.name}",
            found="not checked",
            severity=self.unverified,
        )

    # ------------------------------------------------------------------ by file digests
    def digests_only(self, why: str) -> list[Finding]:
        """Without the candidate's tensors (a checkout of LFS pointers, unreadable files), whole
        files are compared by sha256 (a pointer's oid): with each reference's files, or a Hub
        model's LFS digests. A copy is settled so; anything else is reported not checked."""
        out: list[Finding] = []
        m = self.manifest
        claims: list[tuple[str, tuple[int, BaseModel] | None]] = (
            [(ref, None) for ref in m.policy.references]
            if m.origin == "scratch"
            else [(b.path or "", (i, b)) for i, b in enumerate(m.base_models)]
        )
        if not claims:
            return [_not_checked(m, why, self.unverified)]
        for k, (ref, base) in enumerate(claims):
            if base is None:
                model = hubmodels.of_reference(m, k, ref)
            else:
                model = hubmodels.of_base(m, *base) if base[1].id is not None else None
            if model is not None:
                out += self._hub_ref(model, base[1] if base else None)[1]
                continue
            settled = self._by_file_digest(ref, base)
            if settled is not None:
                out += settled
            elif base is None:
                out.append(_not_checked(m, f"against {ref}: {why}", self.unverified))
            else:
                out.append(self._base_unusable(*base, [why]))
        return out

    def _by_file_digest(self, ref: str, base: tuple[int, BaseModel] | None) -> list[Finding] | None:
        """Findings when file digests settle the claim against a local folder (any file of the
        candidate identical to one of a `scratch` reference's; every file identical to a
        base's), else None."""
        match = digest_match(
            candidate_digests(self.scans), exact.file_digests(self.root, ref, self.scanner), ref
        )
        if base is None:
            if match.same == 0:
                return None
            return [
                rules.PG502.finding(
                    self.manifest.locate("model", "origin"),
                    f"origin `scratch` is contradicted by the weights: {match.summary}",
                    declared="origin: scratch (no base model)",
                    found=match.summary,
                    hint=f"declare `origin: derived` with base_models: [{{path: {ref}, relation:"
                    f" {'copy' if match.identical else 'merge'}}}] and the base model's license",
                )
            ]
        i, declared = base
        if not match.identical:
            return None
        self.record(declared, "copy", match.summary, exact=True)
        if declared.relation == "copy":
            return []
        return [
            rules.PG504.finding(
                self.manifest.locate("base_models", i),
                f"declared `{declared.relation}`, but every weight file is byte-identical to"
                f" {declared.name}: this is a copy",
                declared=f"{declared.relation} of {declared.name}",
                found=match.summary,
            )
        ]

    # ------------------------------------------------------------------ Hub bases

    def _hub_ref(
        self, model: hubmodels.HubModel, base: BaseModel | None
    ) -> tuple[HubRef | None, list[Finding]]:
        """LFS digests settle a copy without a download; otherwise the model is compared in the
        weight tiers (None: nothing more to do), and the findings so far.
        base: the declared base, or None for a reference a `scratch` claim is tested against."""
        look = self.hubs.files(model)
        out = list(look.findings)
        files, sha = look.files, look.sha
        if files is None or sha is None:
            return None, out
        weights = weight_files(files)
        name = f"{model.repo}@{sha[:12]}"
        match = lfs_match(candidate_digests(self.scans), weights, name)
        identical, summary = match.identical, match.summary
        if match.same and base is None:  # one file of a known model is already a copy of it
            copied = rules.PG502.finding(
                self.manifest.locate("model", "origin"),
                f"origin `scratch` is contradicted by the weights: {summary}",
                declared="origin: scratch (no base model)",
                found=summary,
                hint="declare `origin: derived` with base_models:"
                f" [{{id: {model.repo}, revision:"
                f" {sha}, relation: {'copy' if identical else 'merge'}}}] and the base model's"
                " license",
            )
            return None, [*out, copied]
        if identical and base is not None and base.relation != "copy":
            out.append(
                rules.PG504.finding(
                    model.at,
                    f"declared `{base.relation}`, but every weight file is byte-identical to"
                    f" {name}: this is a copy",
                    declared=f"{base.relation} of {base.name}",
                    found=summary,
                )
            )
        if identical:
            if base is not None:
                self.record(base, "copy", summary, exact=True)
            return None, out
        if not weights or not self.full:
            why = (
                "it has no safetensors/GGUF files"
                if not weights
                else f"{summary}; {self.why_tier0}"
            )
            if base is not None:
                self.record(base, None, why)
            return None, [*out, self._hub_not_verified(model, base, why)]
        return HubRef(model, sha, weights), out

    def _hub_not_verified(
        self, model: hubmodels.HubModel, base: BaseModel | None, why: str
    ) -> Finding:
        what = f"relation `{base.relation}`" if base else "independence (origin: scratch)"
        return rules.PG501.finding(
            model.at,
            f"{model.repo}: {what} not verified: {why}",
            declared=f"{base.relation} of {base.name}" if base else "origin: scratch",
            found=f"not checked: {why}",
            severity=self.unverified,
        )

    def _sampled_note(
        self, i: int, base: BaseModel | None, ref: HubRef, verdict: Verdict
    ) -> Finding:
        """base None: a reference a `scratch` claim was tested against (index i)."""
        assert ref.sample is not None
        name = base.name if base else ref.display
        at = self.manifest.locate("base_models", i) if base else ref.model.at
        return rules.PG508.finding(
            at,
            f"{name}: {verdict.relation} found from a sample of the model's rows:"
            f" {ref.sample.summary()}",
            declared=f"{base.relation} of {base.name}" if base else "origin: scratch",
            found=f"{verdict.relation}; {ref.sample.summary()}",
            details=_sample_lines(ref),
        )

    def _base_tier0(
        self, i: int, base: BaseModel, ev: exact.ExactEvidence, why: str | None = None
    ) -> list[Finding]:
        at = self.manifest.locate("base_models", i)
        declared = f"{base.relation} of {base.name}"
        if ev.all_matched:
            self.record(base, "copy", ev.summary(), exact=True)
        else:
            self.record(base, None, f"{ev.summary()}; {why or self.why_tier0}")
        if base.relation == "copy":
            if ev.all_matched:
                return []
            return [
                rules.PG503.finding(
                    at,
                    f"declared a copy of {base.name}, but only {ev.summary()}",
                    declared=declared,
                    found=ev.summary(),
                    details=ev.detail_lines(),
                    hint="declare the relation that describes how the weights were changed",
                )
            ]
        if ev.all_matched:
            return [
                rules.PG504.finding(
                    at,
                    f"declared `{base.relation}`, but every weight tensor is bit-identical to"
                    f" {base.name}: this is a copy",
                    declared=declared,
                    found=ev.summary(),
                )
            ]
        if base.relation == "distill":
            return [_distill_note(at, base, ev.summary())]
        return [
            rules.PG501.finding(
                at,
                f"{base.name}: relation `{base.relation}` not verified: {ev.summary()};"
                f" {why or self.why_tier0}",
                declared=declared,
                found=f"not checked beyond tier 0: {ev.summary()}",
                severity=self.unverified,
            )
        ]

    # ------------------------------------------------------------------ the weight tiers
    def _compare(
        self, refs: Sequence[str | HubRef], tier0: dict[str, exact.ExactEvidence]
    ) -> tuple[list[Verdict | None], list[Finding]]:
        """One Verdict (or None when the reference cannot be opened) per reference: a local
        folder, or a Hub model (its cached files, or a sample of its rows); and the Hub's
        findings (a model that failed, a cached copy refused)."""
        from gate.lineage import memo, models, service

        files, torch_files = [], []
        for rel, scan in sorted(self.scans.items()):
            real, problem = paths.resolve_inside(self.root, rel)
            if problem is not None:
                continue
            if scan.format in registry.TENSOR_FORMATS and scan.tensors is not None:
                files.append(real)
            elif scan.format == "pickle" and registry.holds_torch_weights(rel):
                torch_files.append(real)  # read without unpickling (formats/torch_zip.py)
        files = files or torch_files  # both: the same weights twice (a Hub habit)
        # Local references only: a Hub model's verdict depends on what the cache holds of it.
        # Without a stat cache there is nowhere to keep a verdict, and the key would re-read
        # every file for its SHA-256.
        key = None
        if self.scanner.cache is not None and not any(isinstance(r, HubRef) for r in refs):
            reals = [(r, self._real(r)) for r in refs if isinstance(r, str)]
            key = memo.key(files, self.root, reals, self.scanner, DEFAULT_ALPHA)
            cached = memo.load(self.scanner.cache, key)
            if cached is not None and len(cached) == len(refs):
                return cached, []
        local = [r if isinstance(r, HubRef) else self._open_local(r) for r in refs]
        names = {ref: set(tier0[ref].names) for ref in refs if isinstance(ref, str)}
        done = service.compare(
            models.open_files(files, self.root, "this model"),
            local,
            hub=self.hubs.hub if any(isinstance(r, HubRef) for r in refs) else None,
            scanner=self.scanner,
            alpha=DEFAULT_ALPHA,
            exact_matches=names,
        )
        memo.store(self.scanner.cache, key, done.verdicts)
        found = list(done.findings)
        found += [self.hubs.failed(ref.model, e) for ref, e in done.failures if e is not None]
        return list(done.verdicts), found

    def _real(self, ref: str) -> str | None:
        real, problem = paths.resolve_inside(self.root, ref.rstrip("/"))
        return None if problem else real

    def _open_local(self, ref: str) -> Model | None:
        from gate.lineage import models

        real = self._real(ref)
        try:
            return None if real is None else models.open_model(real, ref)
        except models.ModelError:
            return None


def judge_base(
    manifest: Manifest, i: int, base: BaseModel, ev: exact.ExactEvidence | None, verdict: Verdict
) -> list[Finding]:
    """The findings of base i's declared relation against the weight tiers' verdict (ev: the
    exact tier's evidence, for a local base): none when the verdict agrees."""
    at = manifest.locate("base_models", i)
    declared = f"{base.relation} of {base.name}"
    found = verdict.summary()
    details = _evidence_lines(verdict)
    if base.relation == "distill" and verdict.relation != "copy":
        return [_distill_note(at, base, found, details)]
    if verdict.relation == "independent" or (
        verdict.relation != "adapter" and not verdict.dependent
    ):
        return [
            rules.PG506.finding(
                at,
                f"declared `{base.relation}` of {base.name}, but the weights are {found}",
                declared=declared,
                found=found,
                details=details,
            )
        ]
    if base.relation == "copy" and verdict.relation != "copy":
        return [
            rules.PG503.finding(
                at,
                f"declared a copy of {base.name}, but the weights show {found}",
                declared=declared,
                found=found,
                details=((ev.summary(),) if ev else ()) + details,
                hint=f"declare `relation: {verdict.relation}`",
            )
        ]
    if verdict.relation == "copy" and base.relation != "copy":
        return [
            rules.PG504.finding(
                at,
                f"declared `{base.relation}`, but the weights are {found}: this is a copy",
                declared=declared,
                found=found,
                details=details,
            )
        ]
    ok = verdict.relation in ACCEPTS[base.relation] or (
        base.relation == "adapter" and "adapter_rank" in verdict.details
    )
    if not ok:
        return [
            rules.PG505.finding(
                at,
                f"declared `{base.relation}` of {base.name}, but the weights show {found}",
                declared=declared,
                found=found,
                details=details,
                hint=_SIBLING_HINT
                if verdict.relation == "sibling"
                else f"declare `relation: {verdict.relation}`",
            )
        ]
    return _merge_weight(manifest, i, base, verdict)


_SIBLING_HINT = (
    "this model and the declared base share an ancestor, and neither was made from the other:"
    " declare that ancestor as the base"
)


def _distill_note(
    at: Location, base: BaseModel, found: str, details: tuple[str, ...] = ()
) -> Finding:
    return rules.PG512.finding(
        at,
        f"declared `distill` of {base.name}: a student's weights are its own, so the weights"
        f" cannot test it (they show {found})",
        declared=f"distill of {base.name}",
        found=found,
        details=details,
    )


def _merge_weight(manifest: Manifest, i: int, base: BaseModel, verdict: Verdict) -> list[Finding]:
    merge = verdict.details.get("merge")
    if base.weight is None or not merge:
        return []
    k = merge["parents"].index(verdict.reference)
    got = merge["mean_coefficients"][k]
    if abs(got - base.weight) <= MERGE_WEIGHT_TOLERANCE:
        return []
    return [
        rules.PG507.finding(
            manifest.locate("base_models", i, "weight"),
            f"{base.name}: declared merge weight {base.weight}, recovered {got:.3f}"
            f" ({merge['method']} merge)",
            declared=base.weight,
            found=round(got, 4),
            hint=f"declare `weight: {got:.2f}`",
        )
    ]


def _sample_lines(src: str | HubRef) -> tuple[str, ...]:
    if not isinstance(src, HubRef) or src.sample is None:
        return ()
    return (
        f"{src.display}: {src.sample.summary()}",
        "a sample cannot see a permuted, depth-pruned or re-tokenized derivative; with the"
        " model in the Hugging Face cache every tier runs",
    )


def _base_entry(src: str | HubRef) -> str:
    if isinstance(src, HubRef):
        return f"{{id: {src.repo}, revision: {src.sha}"
    return f"{{path: {src}"


def _evidence_lines(verdict: Verdict, limit: int = 12) -> tuple[str, ...]:
    lines = [f"relation: {verdict.relation}; p {format_p(verdict.log10_p)} ({verdict.p_method})"]
    for row in verdict.layers[:limit]:
        mapped = (
            f" <- reference layer {row.reference_layer}" if row.reference_layer is not None else ""
        )
        lines.append(
            f"layer {row.layer}{mapped}: {row.tensors} tensors, {row.exact} exact, mean |cos|"
            f" {row.mean_effect:.4f} ({row.decided_by}), min p {format_p(row.min_log10_p)}"
        )
    if len(verdict.layers) > limit:
        lines.append(f"... and {len(verdict.layers) - limit} more layers")
    return tuple(lines)
