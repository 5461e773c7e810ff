"""The null hit rate of the permutation-robust matching test, measured on independent models.

`calibration.json` is written by `bench/lineage_accuracy.py --calibrate` from the test zoo's
negative pairs (models of one architecture trained on the same data with different seeds, the
hardest negatives): how often a sampled row's best |cosine| against an unrelated model reaches
HIT_COSINE. The rate used is the 95% upper bound (rule of three when no row hit), so a p-value
built on it is conservative for the models it was measured on. Larger models have longer rows,
whose chance cosines are smaller; the bound is kept for them (docs/lineage.md).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files("gate.lineage").joinpath("calibration.json").read_text("utf-8")
    )
    return data


TABLE = _load()
HIT_COSINE: float = float(TABLE["hit_cosine"])
NULL_HIT_RATE: float = float(TABLE["null_hit_rate"])
