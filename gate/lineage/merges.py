"""Merges recognised across references: per-tensor regressions on the dependent parents."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from gate.lineage import stats
from gate.lineage.models import Model, iter_float, sample_rows
from gate.lineage.result import Verdict

MAX_ROWS = 512  # rows per tensor the regression uses


def across_references(cand: Model, refs: Sequence[Model], verdicts: list[Verdict]) -> list[Verdict]:
    """With two or more dependent references, regress each candidate tensor on them: a merge
    gives a near-perfect fit with a share for every parent (linear: constant shares summing to
    one; SLERP: shares a per-tensor angle explains)."""
    dep = [i for i, v in enumerate(verdicts) if v.dependent and v.relation != "copy"]
    if len(dep) < 2:
        return verdicts
    import numpy as np

    parents = [refs[i] for i in dep]
    maps = [{(t.role, t.layer): t for t in iter_float(p)} for p in parents]
    per_tensor: list[dict[str, Any]] = []
    for t in iter_float(cand):
        refs_t = [m.get((t.role, t.layer)) for m in maps]
        if any(r is None or r.shape != t.shape for r in refs_t) or t.size < 64:
            continue
        rows = sample_rows(cand.rows(t), MAX_ROWS)
        arrays = [p.array(r, rows) for p, r in zip(parents, refs_t, strict=True) if r is not None]
        c = cand.array(t, rows)
        coef, r2 = stats.regression(c, arrays)
        row: dict[str, Any] = {
            "tensor": t.name,
            "coefficients": [round(x, 4) for x in coef],
            "r2": round(r2, 5),
        }
        if len(arrays) == 2:
            st = stats.slerp_t(coef, arrays[0], arrays[1])
            if st is not None:
                row["slerp_t"] = round(st, 4)
        per_tensor.append(row)
    if not per_tensor:
        return verdicts
    r2s = np.array([x["r2"] for x in per_tensor])
    coefs = np.array([x["coefficients"] for x in per_tensor])
    if float(np.median(r2s)) < 0.98 or not (np.median(coefs, axis=0) > 0.05).all():
        return verdicts
    sums = coefs.sum(axis=1)
    linear = abs(float(np.median(sums)) - 1.0) < 0.02 and float(coefs.std(axis=0).max()) < 0.02
    ts = [x["slerp_t"] for x in per_tensor if "slerp_t" in x]
    method = "linear" if linear else "slerp" if len(ts) == len(per_tensor) else "unknown"
    summary: dict[str, Any] = {
        "method": method,
        "parents": [p.display for p in parents],
        "mean_coefficients": [round(float(x), 4) for x in coefs.mean(axis=0)],
        "median_r2": round(float(np.median(r2s)), 5),
        "per_tensor": per_tensor,
    }
    if method == "slerp":
        summary["slerp_t"] = round(float(np.median(ts)), 4)
    out = list(verdicts)
    for k, i in enumerate(dep):
        v = verdicts[i]
        details = dict(v.details, merge=summary)
        weight = summary["mean_coefficients"][k]
        details["summary"] = f"{method} merge, coefficient {weight:.3f}" + (
            f" (SLERP t = {summary['slerp_t']:.3f})" if method == "slerp" else ""
        )
        out[i] = dataclasses.replace(v, relation="merge", details=details)
    return out
