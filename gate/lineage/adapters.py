"""Unmerged PEFT adapters: what can be verified against a base without the merged weights."""

from __future__ import annotations

import dataclasses
from typing import Any

from gate.lineage.models import Model, _Canonical
from gate.lineage.result import Relation, Verdict


def verdict(cand: Model, ref: Model, structure: dict[str, Any]) -> Verdict:
    """An unmerged adapter holds only the low-rank change, so its dependence on a base cannot
    be tested from its weights; what can be checked is that every factor fits the base."""
    cfg = cand.adapter or {}
    ref_shapes = {(t.role, t.layer): t.full_shape or t.shape for t in ref.tensors.values()}
    canon = _Canonical(str(ref.config.get("model_type") or ""), ref.tensors)
    fits = misfits = 0
    rank = None
    for t in cand.tensors.values():
        for part, axis in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
            if not t.name.endswith(part):
                continue
            base = (t.name[: -len(part)] + ".weight").removeprefix("base_model.model.")
            # the base's own tensor by name; by role when the names differ (a GGUF base)
            tr = ref.tensors.get(base) or canon.apply(dataclasses.replace(t, name=base))
            shape = ref_shapes.get((tr.role, tr.layer))
            # Conv1D layers (GPT-2) store weights transposed: fan_in_fan_out
            if (
                shape is not None
                and len(shape) == 2
                and t.shape[axis] in (shape[axis], shape[1 - axis])
            ):
                fits += 1
            else:
                misfits += 1
            if part == ".lora_A.weight":
                rank = t.shape[0]
    relation: Relation = "adapter" if fits and not misfits else "independent"
    details: dict[str, Any] = {
        "adapter_rank": cfg.get("r", rank),
        "target_modules": cfg.get("target_modules"),
        "declared_base": cfg.get("base_model_name_or_path"),
        "modules_fitting": fits,
        "modules_not_fitting": misfits,
    }
    details["summary"] = (
        f"LoRA adapter, rank {details['adapter_rank']}, fits {fits} reference modules"
        if relation == "adapter"
        else f"adapter does not fit: {misfits} module(s) mismatch"
    )
    note = (
        "an unmerged adapter stores only the change, so its dependence on the base is not"
        " testable from weights; its shapes were checked"
    )
    return Verdict(
        reference=ref.display,
        relation=relation,
        dependent=False,
        p_value=None,
        log10_p=None,
        p_method="not testable: adapter weights hold only the low-rank update",
        tests=0,
        effects={},
        details=details,
        structure=structure,
        layers=(),
        tensors=(),
        notes=(note,),
    )
