"""The differential oracle (tests/oracle.py) on a fixed sample: every file whose payload runs
under pickle.load, torch.load(weights_only=False), numpy.load(allow_pickle=True) or joblib.load
is refused by the gate, declared under any policy and lying ignored. fuzz/oracle.py is the long
run of the same check."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from tests import oracle

pytest.importorskip("torch")
pytest.importorskip("joblib")

# Files that no loader of the four executes: the gate refuses them all the same (ambiguous
# zips, a single-file zip that pandas would read).
INERT = {"two archives in one file", "zip, duplicate data.pkl", "single-file zip of a pickle"}


@pytest.mark.slow
def test_nothing_that_runs_under_a_loader_passes_the_gate(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    fixed = list(oracle.candidates(markers))
    rng = random.Random(0)
    sample = fixed + [oracle.mutate(rng.choice(fixed), rng, markers, i) for i in range(150)]
    files = []
    for i, c in enumerate(sample):
        path = tmp_path / "files" / f"{i}-{c.name}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(c.data)
        files.append((path, c.marker))
    ran, _ = oracle.executed(files, tmp_path)
    by_family: Counter[str] = Counter()
    missed = []
    for (path, _), c in zip(files, sample, strict=True):
        if not ran[str(path)]:
            continue
        by_family[c.family] += 1
        verdict = oracle.gate_refuses(tmp_path / "gate" / path.name, c)
        if not all(verdict.values()):
            missed.append((c.family, c.name, ran[str(path)], verdict))
    assert missed == []
    # The generator works: every fixed family but the inert ones really executes somewhere.
    families = {c.family for c in fixed}
    assert {f for f in families if not by_family[f]} == INERT
    assert sum(n for f, n in by_family.items() if f.endswith("(mutated)")) > 0
