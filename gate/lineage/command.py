"""`provenance-gate lineage`: open the models, compare, close. No printing here.

A reference is a local folder or weight file, or a Hub model `hf://owner/name@revision` (read
from the Hugging Face cache when it is there whole, else sampled with range requests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gate import pip_install
from gate.errors import GateError, NothingToCheck
from gate.findings import Location
from gate.lineage.result import DEFAULT_ALPHA, LineageReport
from gate.settings import Settings

if TYPE_CHECKING:
    from gate.hubclient import HubClient
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
    settings: Settings | None = None,
) -> LineageReport:
    """The candidate's relation to each reference (local folders, weight files or Hub models);
    with probe, also the logit probe against each local reference folder."""
    from gate.lineage.claims import weight_tiers_available

    if not weight_tiers_available():
        raise GateError(
            "the lineage command needs numpy, scipy, ml_dtypes and gguf", hint=EXTRA_HINT
        )
    from gate.lineage import calibration, models, service
    from gate.scanner import Scanner

    opened: list[models.Model] = []
    hub_refs = _hub_refs(references, offline, settings)
    try:  # every model opened is closed: by service.compare, or here when one is unusable
        for path in (candidate, *[r for r in references if r not in hub_refs]):
            try:
                opened.append(models.open_model(path))
            except models.ModelError as e:
                raise GateError(str(e), hint="pass a model folder or a weight file") from None
        cand, local = opened[0], iter(opened[1:])
        if not cand.tensors:
            raise NothingToCheck(
                f"{candidate}: {'; '.join(cand.problems) or 'no tensors'}",
                hint="pass a folder with safetensors, GGUF or ONNX weights",
            )
        for ref in opened[1:]:  # a verdict against nothing would read as "independent"
            if not ref.tensors:
                raise GateError(
                    f"reference {ref.display} is not a readable model: {'; '.join(ref.problems)}",
                    hint="pass a model folder or a weight file (safetensors, GGUF or ONNX),"
                    " with its LFS content checked out",
                )
        refs = [hub_refs[r][1] if r in hub_refs else next(local) for r in references]
        client = next((c for c, _ in hub_refs.values()), None)
    except BaseException:
        for m in opened:
            m.close()
        raise
    done = service.compare(cand, refs, hub=client, scanner=Scanner(), alpha=alpha)
    if done.failures:
        failed, error = done.failures[0]
        raise GateError(f"{failed.display}: {failed.problem}", hint=getattr(error, "hint", None))
    notes = {r.display: r.sample.summary() for _, r in hub_refs.values() if r.sample}
    verdicts = tuple(
        dataclasses.replace(v, notes=(*v.notes, notes[v.reference])) if v.reference in notes else v
        for v in done.verdicts
        if v is not None
    )
    if probe:
        verdicts = with_probe(candidate, references, verdicts, device)
    bound = calibration.TABLE.get("false_positive_bound")
    return LineageReport(
        done.candidate, alpha, verdicts, done.problems, str(bound) if bound else None
    )


def with_probe(
    candidate: str, references: Sequence[str], verdicts: Sequence[Verdict], device: str
) -> tuple[Verdict, ...]:
    """Each verdict with the probe's figures beside it, and a note where the two disagree."""
    from gate.lineage import probe, service

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
        said = service.disagreement(v, got)
        notes = (*v.notes, said) if said else v.notes
        out.append(dataclasses.replace(v, probe=got.as_dict(), notes=notes))
    return tuple(out)


def _hub_refs(
    references: Sequence[str], offline: bool, settings: Settings | None
) -> dict[str, tuple[HubClient, HubRef]]:
    """hf:// references -> (client, HubRef at the resolved commit)."""
    from gate import hubclient, hubmodels

    uris = [r for r in references if r.startswith("hf://")]
    if not uris:
        return {}
    if not hubclient.available():
        raise GateError("Hub references need huggingface_hub", hint=pip_install("hub"))
    from gate.lineage.remote import HubRef, weight_files

    client = hubclient.HubClient(settings, offline=offline)
    out: dict[str, tuple[HubClient, HubRef]] = {}
    for uri in uris:
        match = hubmodels.HF_URI.match(uri)
        if match is None or not hubclient.REPO_ID.match(match["repo"]):
            raise GateError(
                f"not a Hub model reference: {uri!r}", hint="write hf://owner/name@revision"
            )
        at = Location("--reference")
        model = hubmodels.HubModel(uri, match["repo"], match["rev"], at, at)
        try:
            sha = client.resolve(model.repo, model.revision)
            weights = weight_files(client.files(model.repo, sha))
        except hubclient.HubError as e:
            raise GateError(f"{uri}: {e.message}", hint=e.hint) from None
        if not weights:
            raise GateError(f"{uri}: no safetensors or GGUF files at {sha[:12]}")
        out[uri] = (client, HubRef(model, sha, weights))
    return out
