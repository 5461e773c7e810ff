"""Relations that say what happened (issue 19): `pruned` only with evidence of what was kept,
vocabulary pruning named with its counts, shared ancestry (`sibling`) told from a derivation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gate.lineage import models
from gate.lineage import relation as relate
from tests.helpers import write_st

H, FFN, VOCAB = 64, 128, 400


def parent(layers: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """A Llama-named state dict with distinct, learned-looking layers."""
    rng = np.random.default_rng(seed)
    out = {"model.embed_tokens.weight": rng.standard_normal((VOCAB, H)).astype(np.float32)}
    for i in range(layers):
        p = f"model.layers.{i}."
        out[p + "self_attn.q_proj.weight"] = rng.standard_normal((H, H)).astype(np.float32)
        out[p + "self_attn.k_proj.weight"] = rng.standard_normal((H, H)).astype(np.float32)
        out[p + "mlp.up_proj.weight"] = rng.standard_normal((FFN, H)).astype(np.float32)
        out[p + "mlp.down_proj.weight"] = rng.standard_normal((H, FFN)).astype(np.float32)
    return out


def save(
    path: Path, tensors: dict[str, np.ndarray], tokens: list[str] | None = None
) -> models.Model:
    write_st(path / "model.safetensors", tensors)
    if tokens is not None:
        (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    return models.open_model(str(path), path.name)


def take_layers(state: dict[str, np.ndarray], keep: list[int], noise: float, seed: int) -> dict:
    """A child made of some of the parent's layers (renumbered), then trained a little."""
    rng = np.random.default_rng(seed)
    out = {"model.embed_tokens.weight": state["model.embed_tokens.weight"]}
    for new, old in enumerate(keep):
        for k, v in state.items():
            if k.startswith(f"model.layers.{old}."):
                out[k.replace(f"layers.{old}.", f"layers.{new}.")] = v
    return {k: v + noise * rng.standard_normal(v.shape).astype(np.float32) for k, v in out.items()}


def test_siblings_are_not_a_derivation_of_each_other(tmp_path: Path) -> None:
    """Two children of one parent, each with different layers of it, trained apart: their
    embeddings are related and no layer is. Was: "pruned of the other, 3 of 6 layers kept: []"."""
    base = parent()
    a = save(tmp_path / "a", take_layers(base, [0, 1, 2], 0.3, 1))
    b = save(tmp_path / "b", take_layers(base, [3, 4, 5], 0.3, 2))
    (v,) = relate.compare(a, [b]).verdicts
    assert v.relation == "sibling" and v.dependent, v.summary()
    assert v.details["shared"] == ["model.embed_tokens.weight"]
    assert "neither derives from the other" in v.summary()
    (v,) = relate.compare(a, [save(tmp_path / "p", base)]).verdicts
    assert v.relation == "pruned" and v.details["layer_map"] == [0, 1, 2, None, None, None][:3]


def test_pruned_needs_evidence_of_what_was_kept(tmp_path: Path) -> None:
    """Fewer layers than the reference and no layer of it kept: not `pruned`."""
    base = parent()
    fresh = parent(layers=3, seed=9)
    fresh["model.embed_tokens.weight"] = base[
        "model.embed_tokens.weight"
    ] + 0.3 * np.random.default_rng(4).standard_normal((VOCAB, H)).astype(np.float32)
    (v,) = relate.compare(save(tmp_path / "f", fresh), [save(tmp_path / "b", base)]).verdicts
    assert v.relation != "pruned", v.summary()
    assert v.relation == "sibling"


def test_a_pruned_vocabulary_is_named_with_its_counts(tmp_path: Path) -> None:
    """Most embedding rows dropped and the rest re-indexed, every other tensor equal. Was:
    `copy`, "weights permuted, scaled or rotated"."""
    base = parent(layers=2)
    tokens = [f"tok{i}" for i in range(VOCAB)]
    keep = sorted(np.random.default_rng(5).choice(VOCAB, 150, replace=False).tolist())
    child = dict(base)
    child["model.embed_tokens.weight"] = base["model.embed_tokens.weight"][keep]
    ref = save(tmp_path / "base", base, tokens)
    (v,) = relate.compare(save(tmp_path / "c", child, [tokens[i] for i in keep]), [ref]).verdicts
    assert v.relation == "pruned", v.summary()
    assert v.details["vocabulary"] == {"candidate": 150, "reference": VOCAB, "aligned_tokens": 150}
    assert "vocabulary pruned: 400 -> 150 tokens" in v.summary()


def test_an_extended_vocabulary_is_named_too(tmp_path: Path) -> None:
    base = parent(layers=2)
    tokens = [f"tok{i}" for i in range(VOCAB)]
    child = dict(base)
    extra = np.random.default_rng(6).standard_normal((40, H)).astype(np.float32)
    child["model.embed_tokens.weight"] = np.concatenate([base["model.embed_tokens.weight"], extra])
    ref = save(tmp_path / "base", base, tokens)
    cand = save(tmp_path / "c", child, tokens + [f"new{i}" for i in range(40)])
    (v,) = relate.compare(cand, [ref]).verdicts
    assert v.relation == "finetune", v.summary()
    assert "vocabulary extended: 400 -> 440 tokens" in v.summary()


def test_two_different_vocabulary_prunes_are_siblings(tmp_path: Path) -> None:
    """Each child kept tokens the other dropped: neither can have been made from the other
    (a derivation cannot bring back rows it never had), while their shared rows and layers
    are related."""
    base = parent(layers=2)
    tokens = [f"tok{i}" for i in range(VOCAB)]
    rng = np.random.default_rng(7)
    kept = [sorted(rng.choice(VOCAB, 250, replace=False).tolist()) for _ in range(2)]
    children = []
    for n, keep in enumerate(kept):
        child = {
            k: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32) for k, v in base.items()
        }
        child["model.embed_tokens.weight"] = child["model.embed_tokens.weight"][keep]
        children.append(save(tmp_path / f"c{n}", child, [tokens[i] for i in keep]))
    (v,) = relate.compare(children[0], [children[1]]).verdicts
    assert v.relation == "sibling" and v.dependent, v.summary()
    assert "each has tokens the other lacks" in v.summary()
    (v,) = relate.compare(children[0], [save(tmp_path / "base", base, tokens)]).verdicts
    assert v.relation == "pruned", v.summary()  # against the ancestor: a derivation


@pytest.mark.parametrize("multiset", [True, False])
def test_a_bert_with_permuted_units_and_heads_is_a_copy(
    tmp_path: Path, multiset: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A BERT encoder with its FFN units and attention heads permuted computes the same
    function. Some heads stay in place, so the in-place test is significant but weak (|cos|
    0.25-0.5): it was `finetune`. Both permutation-invariant tests must see it: the exact
    multiset of values, and (for tensors too large for it) the matching test."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if not multiset:
        monkeypatch.setattr(relate, "MULTISET_MAX", 0)
    cfg = transformers.BertConfig(vocab_size=300, hidden_size=128, intermediate_size=512,
                                  num_hidden_layers=2, num_attention_heads=4)  # fmt: skip
    torch.manual_seed(0)
    net = transformers.BertModel(cfg).eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    for i in range(2):
        p = f"encoder.layer.{i}."
        units = torch.randperm(512, generator=gen)
        for k in ("intermediate.dense.weight", "intermediate.dense.bias"):
            state[p + k] = state[p + k][units]
        state[p + "output.dense.weight"] = state[p + "output.dense.weight"][:, units]
        heads = torch.tensor([1, 0, 2, 3])  # two heads swapped, two in place
        rows = torch.cat([torch.arange(h * 32, (h + 1) * 32) for h in heads])
        for n in ("query", "key", "value"):
            for k in ("weight", "bias"):
                state[p + f"attention.self.{n}.{k}"] = state[p + f"attention.self.{n}.{k}"][rows]
        state[p + "attention.output.dense.weight"] = state[p + "attention.output.dense.weight"][
            :, rows
        ]
    permuted = transformers.BertModel(cfg).eval()
    permuted.load_state_dict(state)
    ids = torch.randint(0, 300, (1, 12))
    with torch.no_grad():
        assert torch.allclose(
            net(ids).last_hidden_state, permuted(ids).last_hidden_state, atol=1e-5
        )
    net.save_pretrained(tmp_path / "base")
    permuted.save_pretrained(tmp_path / "perm")
    cand = models.open_model(str(tmp_path / "perm"), "perm")
    (v,) = relate.compare(cand, [models.open_model(str(tmp_path / "base"), "base")]).verdicts
    assert v.relation == "copy", v.summary()
    tests = {e.test for e in v.tensors if "attention.self.query.weight" in e.candidate}
    assert tests == ({"multiset"} if multiset else {"matched"})


def test_a_re_indexed_vocabulary_is_a_copy_and_swapped_tokens_are_not(tmp_path: Path) -> None:
    """The same tokens in another order, rows moved with them: the same function, a copy. A
    few tokens swapped for new ones (2%, below the sibling threshold): changed, not a copy."""
    base = parent(layers=2)
    tokens = [f"tok{i}" for i in range(VOCAB)]
    ref = save(tmp_path / "base", base, tokens)
    order = np.random.default_rng(8).permutation(VOCAB)
    shuffled = dict(base)
    shuffled["model.embed_tokens.weight"] = base["model.embed_tokens.weight"][order]
    (v,) = relate.compare(
        save(tmp_path / "s", shuffled, [tokens[i] for i in order]), [ref]
    ).verdicts
    assert v.relation == "copy", v.summary()
    swapped = dict(base)
    emb = base["model.embed_tokens.weight"].copy()
    emb[:8] = np.random.default_rng(9).standard_normal((8, H)).astype(np.float32)
    swapped["model.embed_tokens.weight"] = emb
    cand = save(tmp_path / "w", swapped, [f"new{i}" for i in range(8)] + tokens[8:])
    (v,) = relate.compare(cand, [ref]).verdicts
    assert v.relation == "finetune" and "vocabulary changed: 400 -> 400 tokens" in v.summary()
