"""`provenance-gate lineage`: open the models, compare, close. No printing here.

A reference is a local folder or weight file, or a Hub model `hf://owner/name@revision` (read
from the Hugging Face cache when it is there whole, else sampled with range requests).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gate import pip_install
from gate.errors import GateError, NothingToCheck
from gate.findings import Location
from gate.lineage.result import DEFAULT_ALPHA, LineageReport

if TYPE_CHECKING:
    from gate.hub import HubClient
    from gate.lineage.probe import ProbeResult
    from gate.lineage.remote import HubRef
    from gate.lineage.result import Verdict

EXTRA_HINT = f"install the weight tiers: {pip_install('lineage')}"


def audit(
    candidate: str,
    references: Sequence[str],
    alpha: float = DEFAULT_ALPHA,
    offline: bool = False,
    probe: bool = False,
    device: str = "cpu",
) -> LineageReport:
    """The candidate's relation to each reference (local folders, weight files or Hub models);
    with probe, also the logit probe against each local reference folder."""
    from gate.lineage.verify import weight_tiers_available

    if not weight_tiers_available():
        raise GateError(
            "the lineage command needs numpy, scipy, ml_dtypes and gguf", hint=EXTRA_HINT
        )
    from gate.lineage import calibration, models, relate, remote
    from gate.scanner import Scanner

    opened: list[models.Model] = []
    hub_refs = _hub_refs(references, offline)
    try:
        for path in (candidate, *[r for r in references if r not in hub_refs]):
            try:
                opened.append(models.open_model(path))
            except models.ModelError as e:
                raise GateError(str(e), hint="pass a model folder or a weight file") from None
        cand, local = opened[0], iter(opened[1:])
        if not cand.tensors:
            raise NothingToCheck(
                f"{candidate}: {'; '.join(cand.problems) or 'no tensors'}",
                hint="pass a folder with safetensors or GGUF weights",
            )
        for ref in opened[1:]:  # a verdict against nothing would read as "independent"
            if not ref.tensors:
                raise GateError(
                    f"reference {ref.display} is not a readable model: {'; '.join(ref.problems)}",
                    hint="pass a model folder or a weight file (safetensors or GGUF),"
                    " with its LFS content checked out",
                )
        refs = [hub_refs[r][1] if r in hub_refs else next(local) for r in references]
        client = next((c for c, _ in hub_refs.values()), None)
        with tempfile.TemporaryDirectory(prefix="provenance-gate-") as workdir:
            cand, cut = remote.open_all(client, cand, refs, Scanner(), workdir, [], _raise)
            present = [m for m in cut if m is not None]
            opened += [m for m in present if all(m is not o for o in opened)]
            report = relate.compare(cand, present, alpha)
            explained = remote.explain(cand, report.verdicts)
    finally:
        for m in opened:
            m.close()
    notes = {r.display: r.sample.summary() for _, r in hub_refs.values() if r.sample}
    verdicts = tuple(
        dataclasses.replace(v, notes=(*v.notes, notes[v.reference])) if v.reference in notes else v
        for v in explained
    )
    if probe:
        verdicts = with_probe(candidate, references, verdicts, device)
    bound = calibration.TABLE.get("false_positive_bound")
    return LineageReport(
        report.candidate, alpha, verdicts, report.problems, str(bound) if bound else None
    )


def with_probe(
    candidate: str, references: Sequence[str], verdicts: Sequence[Verdict], device: str
) -> tuple[Verdict, ...]:
    """Each verdict with the probe's figures beside it, and a note where the two disagree."""
    from gate.lineage import probe

    local = [r for r in references if not r.startswith("hf://")]
    if not probe.available():
        raise GateError("--probe needs torch and transformers", hint=probe.EXTRA_HINT)
    try:
        results: dict[str, ProbeResult | str] = dict(
            zip(local, probe.run(candidate, local, device), strict=True)
        )
    except probe.ProbeError as e:  # the candidate itself cannot run: the weights still speak
        results = dict.fromkeys(local, e.message)
    out = []
    for ref, v in zip(references, verdicts, strict=True):
        got = results.get(ref, "the probe needs the reference's files in a local folder")
        if isinstance(got, str):
            out.append(dataclasses.replace(v, notes=(*v.notes, f"probe not run: {got}")))
            continue
        said = disagreement(v, got)
        notes = (*v.notes, said) if said else v.notes
        out.append(dataclasses.replace(v, probe=got.as_dict(), notes=notes))
    return tuple(out)


def disagreement(v: Verdict, got: ProbeResult) -> str | None:
    """What to say when the probe and the weight tiers disagree about dependence."""
    if got.dependent is None or got.dependent == v.dependent:
        return None
    probe_says = "dependent" if got.dependent else "not dependent"
    return (
        f"the probe and the weights disagree: the weights say {v.relation}, the probe says"
        f" {probe_says} (centred cosine {got.cosine:.4f}, empirical p {got.p_value:.3g})"
    )


def _hub_refs(references: Sequence[str], offline: bool) -> dict[str, tuple[HubClient, HubRef]]:
    """hf:// references -> (client, HubRef at the resolved commit)."""
    from gate import hub, hubbase

    uris = [r for r in references if r.startswith("hf://")]
    if not uris:
        return {}
    if not hub.available():
        raise GateError("Hub references need huggingface_hub", hint=pip_install("hub"))
    from gate.lineage.remote import HubRef, weight_files

    client = hub.HubClient(offline=offline)
    out: dict[str, tuple[HubClient, HubRef]] = {}
    for uri in uris:
        match = hubbase.HF_URI.match(uri)
        if match is None or not hub.REPO_ID.match(match["repo"]):
            raise GateError(
                f"not a Hub model reference: {uri!r}", hint="write hf://owner/name@revision"
            )
        at = Location("--reference")
        model = hubbase.HubModel(uri, match["repo"], match["rev"], at, at)
        try:
            sha = client.resolve(model.repo, model.revision)
            weights = weight_files(client.files(model.repo, sha))
        except hub.HubError as e:
            raise GateError(f"{uri}: {e.message}", hint=e.hint) from None
        if not weights:
            raise GateError(f"{uri}: no safetensors or GGUF files at {sha[:12]}")
        out[uri] = (client, HubRef(model, sha, weights))
    return out


def _raise(ref: HubRef, e: Exception | None) -> None:
    raise GateError(f"{ref.display}: {ref.problem}", hint=getattr(e, "hint", None))
