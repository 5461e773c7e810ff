"""`provenance-gate lineage`: open the models, compare, close. No printing here.

A reference is a local folder or weight file, or a Hub model `hf://owner/name@revision` (read
from the Hugging Face cache when it is there whole, else sampled with range requests).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gate.errors import GateError, NothingToCheck
from gate.findings import Location
from gate.lineage.result import DEFAULT_ALPHA, LineageReport

if TYPE_CHECKING:
    from gate.hub import HubClient
    from gate.lineage.remote import HubRef

EXTRA_HINT = "install the weight tiers: pip install 'provenance-gate[lineage]'"


def audit(
    candidate: str,
    references: Sequence[str],
    alpha: float = DEFAULT_ALPHA,
    offline: bool = False,
) -> LineageReport:
    """The candidate's relation to each reference (local folders, weight files or Hub models)."""
    from gate.lineage.verify import weight_tiers_available

    if not weight_tiers_available():
        raise GateError("the lineage command needs numpy, scipy, ml_dtypes and gguf",
                        hint=EXTRA_HINT)  # fmt: skip
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
            raise NothingToCheck(f"{candidate}: {'; '.join(cand.problems) or 'no tensors'}",
                                 hint="pass a folder with safetensors or GGUF weights")  # fmt: skip
        refs = [hub_refs[r][1] if r in hub_refs else next(local) for r in references]
        client = next((c for c, _ in hub_refs.values()), None)
        with tempfile.TemporaryDirectory(prefix="provenance-gate-") as workdir:
            cand, cut = remote.open_all(client, cand, refs, Scanner(), workdir, [], _raise)
            present = [m for m in cut if m is not None]
            opened += [m for m in present if m not in opened]
            report = relate.compare(cand, present, alpha)
            explained = remote.explain(cand, report.verdicts)
    finally:
        for m in opened:
            m.close()
    notes = {r.display: r.sample.summary() for _, r in hub_refs.values() if r.sample}
    verdicts = tuple(
        dataclasses.replace(v, notes=(*v.notes, notes[v.reference])) if v.reference in notes
        else v for v in explained
    )  # fmt: skip
    bound = calibration.TABLE.get("false_positive_bound")
    return LineageReport(report.candidate, alpha, verdicts, report.problems,
                         str(bound) if bound else None)  # fmt: skip


def _hub_refs(references: Sequence[str], offline: bool) -> dict[str, tuple[HubClient, HubRef]]:
    """hf:// references -> (client, HubRef at the resolved commit)."""
    from gate import hub, hubbase

    uris = [r for r in references if r.startswith("hf://")]
    if not uris:
        return {}
    if not hub.available():
        raise GateError("Hub references need huggingface_hub",
                        hint="pip install 'provenance-gate[hub]'")  # fmt: skip
    from gate.lineage.remote import HubRef, weight_files

    client = hub.HubClient(offline=offline)
    out: dict[str, tuple[HubClient, HubRef]] = {}
    for uri in uris:
        match = hubbase.HF_URI.match(uri)
        if match is None or not hub.REPO_ID.match(match["repo"]):
            raise GateError(f"not a Hub model reference: {uri!r}",
                            hint="write hf://owner/name@revision")  # fmt: skip
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
