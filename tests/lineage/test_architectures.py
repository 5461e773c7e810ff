"""Lineage on the architecture zoo (tests/zoo/archs.py): every family, every relation, the
function-preserving disguises of each (asserted when built), and independence across seeds and
across architectures."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gate.lineage.models import Model, open_model
from gate.lineage.relation import compare
from gate.lineage.result import Verdict
from tests.zoo import archs

pytestmark = pytest.mark.slow  # the trained architecture zoo

EXPECTED = {"base": "copy"}
FAMILIES = list(archs.FAMILIES)
KINDS = ["", ".ft", ".permuted", ".permuted-fp16", ".scaled-fp16", ".residual-fp16",
         ".vocab-permuted", ".int8", ".ft-permuted", ".pruned"]  # fmt: skip
TOKENIZED = (".residual-fp16", ".vocab-permuted")  # need a vocabulary: not built for ViT


@pytest.fixture(scope="module")
def opened(arch_zoo: Path) -> Iterator[dict[str, Model]]:
    """The zoo's models, each opened once for the module and closed after it."""
    cache: dict[str, Model] = {}
    yield cache
    for model in cache.values():
        model.close()


def verdict(zoo: Path, cache: dict[str, Model], name: str, ref: str) -> Verdict:
    def m(x: str) -> Model:
        return cache.setdefault(x, open_model(str(zoo / x), x))

    return compare(m(name), [m(ref)]).verdicts[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_relation_of_every_family(
    arch_zoo: Path, opened: dict[str, Model], family: str
) -> None:
    truth = archs.truth(arch_zoo)
    for seed, kind in itertools.product(("s0", "s1"), KINDS):
        name = f"{family}-{seed}{kind}"
        if name not in truth:
            assert family == "vit" and kind in TOKENIZED
            continue
        t: dict[str, Any] = truth[name]
        v = verdict(arch_zoo, opened, name, t["base"])
        assert v.relation == EXPECTED.get(t["relation"], t["relation"]), (name, v.details)
        assert v.dependent
        if kind == ".pruned":
            assert v.details["layer_map"] == [0, 2]
        if kind == ".vocab-permuted":
            assert v.details["summary"] == "the same function: the same 384 tokens re-indexed"
        if kind in (".permuted-fp16", ".scaled-fp16", ".residual-fp16"):  # matching decided
            assert v.details["summary"] == "the same function: weights permuted, scaled or rotated"
            assert any(e.test == "matched" for e in v.tensors)
        if kind == ".ft-permuted":  # each layer's matrices decided by the matched statistic
            matrices = [e for e in v.tensors if e.layer is not None and e.orientation != "flat"]
            assert matrices and all(e.effect > 0.9 for e in matrices), name
            assert any(e.test == "matched" for e in matrices)
            assert {row.decided_by for row in v.layers if row.layer != "other"} == {"matched"}
        other = f"{family}-{'s1' if seed == 's0' else 's0'}"
        n = verdict(arch_zoo, opened, name, other)
        assert not n.dependent, (name, other, n.relation, n.details)


def test_independent_across_architectures(arch_zoo: Path, opened: dict[str, Model]) -> None:
    """Each family's first base against every other family's: tensors that share roles and
    shapes (Qwen2, Gemma, Mixtral attention; BERT and RoBERTa everywhere) are tested and found
    unrelated."""
    for a, b in itertools.permutations(FAMILIES, 2):
        v = verdict(arch_zoo, opened, f"{a}-s0", f"{b}-s0")
        assert not v.dependent, (a, b, v.relation, v.details)
    shared = verdict(arch_zoo, opened, "bert-s0", "roberta-s0").structure["shared_roles"]
    assert shared > 20  # RoBERTa's names read through BERT's table: the layers pair


def test_architecture_specifics(arch_zoo: Path, opened: dict[str, Model]) -> None:
    # Mixtral: experts re-ordered with the router's rows, paired back by the router
    v = verdict(arch_zoo, opened, "mixtral-s0.ft-permuted", "mixtral-s0")
    assert set(v.details["experts"]) == {"0", "1", "2"}
    assert any(n.startswith("routed experts re-ordered") for n in v.notes)
    assert "experts" not in verdict(arch_zoo, opened, "mixtral-s0", "mixtral-s1").details
    # Whisper's fixed sinusoidal encoder positions are no evidence, equal as they are
    model = opened.setdefault("whisper-s1", open_model(str(arch_zoo / "whisper-s1")))
    positions = "model.encoder.embed_positions.weight"
    v = verdict(arch_zoo, opened, "whisper-s0", "whisper-s1")
    assert positions in model.tensors and positions not in {e.candidate for e in v.tensors}
    assert v.effects["exact_fraction"] == 0.0
    # T5: the encoder's and the decoder's layers are different roles
    t5 = opened.setdefault("t5-s0", open_model(str(arch_zoo / "t5-s0")))
    roles = {(t.role, t.layer) for t in t5.tensors.values()}
    assert len(roles) == len(t5.tensors)
    assert ("enc.blk.*.attn_q.weight", 0) in roles and ("dec.blk.*.attn_q.weight", 0) in roles
