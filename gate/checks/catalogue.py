"""The checks `check` runs, in the order of the report's findings: one entry per check."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from gate.checks import artifacts, declarations, known, lineage, onnx_models, shards, signature
from gate.evidence import Evidence
from gate.findings import Finding


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Evidence], list[Finding]]
    summary: str


CHECKS: tuple[Check, ...] = (
    Check("artifacts", artifacts.declared, "declared files: digests, formats, pickles, lock"),
    Check("undeclared", artifacts.undeclared, "weight or executable files nobody declared"),
    Check("shards", shards.check, "sharded checkpoint indexes against their shards"),
    Check("onnx", onnx_models.check, "ONNX external data beside the model, custom operators"),
    Check("lineage", lineage.check, "scratch and base-model claims against the weights"),
    Check("known", known.check, "the weights looked up in pack indexes of known bases"),
    Check("declarations", declarations.check, "licenses, license file, model card, policy"),
    Check("signature", signature.check, "model.sig's digests against the files and manifest"),
)
