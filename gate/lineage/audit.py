"""`provenance-gate lineage`: open the models, compare, close. No printing here."""

from __future__ import annotations

from collections.abc import Sequence

from gate.errors import GateError, NothingToCheck
from gate.lineage.result import DEFAULT_ALPHA, LineageReport

EXTRA_HINT = "install the weight tiers: pip install 'provenance-gate[lineage]'"


def audit(candidate: str, references: Sequence[str], alpha: float = DEFAULT_ALPHA) -> LineageReport:
    """The candidate's relation to each reference (local folders or weight files)."""
    from gate.lineage.verify import weight_tiers_available

    if not weight_tiers_available():
        raise GateError("the lineage command needs numpy, scipy, ml_dtypes and gguf",
                        hint=EXTRA_HINT)  # fmt: skip
    from gate.lineage import calibration, models, relate

    opened: list[models.Model] = []
    try:
        for path in (candidate, *references):
            try:
                opened.append(models.open_model(path))
            except models.ModelError as e:
                raise GateError(str(e), hint="pass a model folder or a weight file") from None
        cand, refs = opened[0], opened[1:]
        if not cand.tensors:
            raise NothingToCheck(f"{candidate}: {'; '.join(cand.problems) or 'no tensors'}",
                                 hint="pass a folder with safetensors or GGUF weights")  # fmt: skip
        report = relate.compare(cand, refs, alpha)
    finally:
        for m in opened:
            m.close()
    bound = calibration.TABLE.get("false_positive_bound")
    return LineageReport(report.candidate, alpha, report.verdicts, report.problems,
                         str(bound) if bound else None)  # fmt: skip
