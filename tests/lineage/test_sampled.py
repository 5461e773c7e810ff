"""Lineage against Hub bases from a sample of their rows (gate/lineage/sampled.py): the zoo's
bases served on loopback with range requests, every derivative compared with `hf://` references,
the verdict checked against the truth; and the fraction of a multi-shard base that is fetched."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gate.lineage import sampled
from gate.lineage.command import audit
from tests import hubserver
from tests.lineage.test_zoo import EXPECTED, names
from tests.zoo import build

pytestmark = pytest.mark.slow  # the trained zoo behind a Hub stand-in

# A sample compares rows at the same index: a residual-stream rotation moves every row, and a
# child that kept later layers renumbered them, so these need the base whole (from the Hugging
# Face cache). They must not be convicted of anything else (never `sibling`: a sample cannot
# show that no layer is related).
NEEDS_WHOLE_BASE = {
    "llama-s0.rotated": ("independent", "copy"),
    "llama-s0.all-attacks": ("independent", "copy"),
    "llama-s0.sib-layers-b": ("finetune",),
}


@pytest.fixture(scope="module")
def zoo_hub(zoo: Path) -> Iterator[tuple[Path, Any, dict[str, str]]]:
    server = hubserver.RangeHub()
    shas = {b: server.add(f"zoo/{b}", str(zoo / b)) for b in ("llama-s0", "llama-s1", "gpt2-s0",
                                                              "gpt2-s1")}  # fmt: skip
    yield zoo, server, shas
    server.close()


@pytest.mark.parametrize("name", names())
def test_sampled_verdict_agrees_with_the_truth(
    zoo_hub: tuple[Path, Any, dict[str, str]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    zoo, server, shas = zoo_hub
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    t = build.truth(zoo)[name]
    parents = t.get("parents") or [t["base"]]
    report = audit(str(zoo / name), [f"hf://zoo/{p}@{shas[p]}" for p in parents])
    v = report.verdicts[0]
    if name in NEEDS_WHOLE_BASE:
        assert v.relation in NEEDS_WHOLE_BASE[name], v.summary()
        return
    assert v.relation == EXPECTED.get(t["relation"], t["relation"]), v.summary()
    if v.relation != "adapter":
        assert any("sampled" in n for n in v.notes)
        assert v.p_value is not None and v.p_value <= 1e-3


def test_a_multi_shard_base_costs_under_one_percent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 195 MB base in 3 shards (12 layers, hidden 768): the bytes the server sends for a
    fine-tune's lineage, counted by the server, are a small fraction of the base."""
    fam = hubserver.llama_family(str(tmp_path), hidden=768, inter=2048, vocab=8192, layers=12,
                                 shards=3, kinds=("base", "finetune"))  # fmt: skip
    server = hubserver.RangeHub()
    try:
        commit = server.add("acme/big", fam["base"])
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        report = audit(fam["finetune"], [f"hf://acme/big@{commit}"])
        size = sum(os.path.getsize(os.path.join(fam["base"], f)) for f in os.listdir(fam["base"])
                   if f.endswith(".safetensors"))  # fmt: skip
        fraction = server.sent["acme/big"] / size
    finally:
        server.close()
    (v,) = report.verdicts
    assert v.relation == "finetune" and v.p_value is not None and v.p_value < 1e-12
    assert fraction < 0.01, fraction
    print(f"fetched {server.sent['acme/big']} of {size} bytes: {100 * fraction:.3f}%")


def test_rows_are_runs_inside_the_matrix() -> None:
    rows = sampled.rows_for(1000, seed=7)
    assert rows is not None
    assert len(set(rows.tolist())) == sampled.ROWS and rows.max() < 1000
    runs = sum(1 for a, b in itertools.pairwise(rows) if b != a + 1) + 1
    assert runs <= sampled.RUNS  # one range request per run (adjacent runs merge)
