"""Architecture-independent lineage rules (issue 19), on synthetic checkpoints: roles unique per
model (T5's and Whisper's two stacks), RoBERTa read through BERT's table, routed experts paired
by their router, tables every model holds (fixed sinusoids, token-frequency biases) kept out of
the evidence, and a permuted copy's small tensors lined up before `copy` is named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gate import hashing
from gate.lineage import models
from gate.lineage import relation as relate
from tests.helpers import write_st

H, FFN, E = 64, 128, 4


def open_(path: Path, tensors: dict[str, np.ndarray], model_type: str = "") -> models.Model:
    # contiguous: safetensors' numpy writer stores a column-major array's buffer as is
    write_st(path / "model.safetensors", {k: np.ascontiguousarray(v) for k, v in tensors.items()})
    if model_type:
        (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    return models.open_model(str(path), path.name)


def roles(tensors: dict[str, tuple[int, ...]], arch: str) -> dict[str, tuple[str, int | None]]:
    refs = {
        n: models.TensorRef(n, n, None, shape, "F32", "f", 0, 4 * int(np.prod(shape)))
        for n, shape in tensors.items()
    }
    return {n: (t.role, t.layer) for n, t in models.canonical(arch, refs).items()}


def sinusoids(length: int, channels: int) -> np.ndarray:
    """Whisper's fixed position table (half sines, half cosines)."""
    inc = np.log(10000) / (channels // 2 - 1)
    scaled = np.arange(length)[:, None] * np.exp(-inc * np.arange(channels // 2))[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def test_two_stacks_keep_their_layers_apart() -> None:
    t5 = roles({"encoder.block.0.layer.0.SelfAttention.q.weight": (H, H),
                "decoder.block.0.layer.0.SelfAttention.q.weight": (H, H),
                "decoder.block.0.layer.1.EncDecAttention.q.weight": (H, H)}, "t5")  # fmt: skip
    assert sorted(t5.values()) == [("dec.blk.*.attn_q.weight", 0),
                                   ("dec.blk.*.cross_attn_q.weight", 0),
                                   ("enc.blk.*.attn_q.weight", 0)]  # fmt: skip
    # no table knows Whisper: both stacks' attention read as 'blk.N.attn_q' through the
    # fallback table, so both are named from their own paths, as far as tells them apart
    whisper = roles({"model.encoder.layers.1.self_attn.q_proj.weight": (H, H),
                     "model.decoder.layers.1.self_attn.q_proj.weight": (H, H),
                     "model.decoder.layers.1.fc1.weight": (FFN, H)}, "whisper")  # fmt: skip
    assert whisper == {
        "model.encoder.layers.1.self_attn.q_proj.weight": ("encoder.layers.*.self_attn.q_proj.weight", 1),
        "model.decoder.layers.1.self_attn.q_proj.weight": ("decoder.layers.*.self_attn.q_proj.weight", 1),
        "model.decoder.layers.1.fc1.weight": ("layers.*.fc1.weight", 1),
    }  # fmt: skip


def test_roberta_reads_through_berts_table() -> None:
    names = {"roberta.encoder.layer.2.attention.self.query.weight": (H, H),
             "roberta.embeddings.word_embeddings.weight": (100, H),
             "roberta.embeddings.position_embeddings.weight": (66, H)}  # fmt: skip
    assert sorted(roles(names, "roberta").values(), key=str) == [
        ("blk.*.attn_q.weight", 2), ("position_embd.weight", None), ("token_embd.weight", None)
    ]  # fmt: skip


def test_sinusoidal_tables() -> None:
    def formula(x: np.ndarray) -> bool:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return hashing.formula_table("F32", x.shape, x.tobytes())

    table = sinusoids(1500, 384)
    assert formula(table)
    assert formula(table.astype(np.float16))  # stored in half
    rng = np.random.default_rng(0)
    assert not formula(rng.standard_normal((64, 64)))
    # a learned, smooth table (a random walk along positions) is no formula
    assert not formula(np.cumsum(rng.standard_normal((64, 64)), axis=0))
    assert not formula(table[:4]) and not formula(np.zeros((32, 8)))


def encoder(seed: int) -> dict[str, np.ndarray]:
    """A Whisper-like encoder: fixed sinusoidal positions on the residual, LayerNorm
    parameters along it, and layers of its own seed."""
    rng = np.random.default_rng(seed)
    out = {"model.encoder.embed_positions.weight": sinusoids(32, H)}
    for i in range(2):
        p = f"model.encoder.layers.{i}."
        out[p + "fc1.weight"] = rng.standard_normal((FFN, H)).astype(np.float32)
        out[p + "fc2.weight"] = rng.standard_normal((H, FFN)).astype(np.float32)
    return out


def test_fixed_positions_and_the_axis_they_anchor_are_no_evidence(tmp_path: Path) -> None:
    a, b = encoder(1), encoder(2)
    # what the shared positions teach every model: norm parameters correlated along the axis
    shared = np.linspace(-1, 1, H, dtype=np.float32) ** 3
    rng = np.random.default_rng(3)
    for state in (a, b):
        state["model.encoder.layers.0.final_layer_norm.bias"] = shared + 0.3 * rng.standard_normal(
            H
        ).astype(np.float32)
    (v,) = relate.compare(open_(tmp_path / "a", a), [open_(tmp_path / "b", b)]).verdicts
    assert not v.dependent, v.summary()
    tested = {e.candidate for e in v.tensors}
    assert "model.encoder.embed_positions.weight" not in tested  # equal, yet no evidence
    assert "model.encoder.layers.0.final_layer_norm.bias" not in tested


def test_a_token_indexed_bias_is_no_evidence(tmp_path: Path) -> None:
    """A masked-LM head's output bias holds the corpus's token frequencies (0.97 between two
    BERTs trained from different seeds): it is left out."""
    rng = np.random.default_rng(0)
    freq = np.sort(rng.standard_normal(100)).astype(np.float32)
    states = []
    for seed in (1, 2):
        g = np.random.default_rng(seed)
        states.append({
            "bert.embeddings.word_embeddings.weight": g.standard_normal((100, H)).astype(np.float32),
            "cls.predictions.bias": freq + 0.05 * g.standard_normal(100).astype(np.float32),
            "bert.encoder.layer.0.intermediate.dense.weight":
                g.standard_normal((FFN, H)).astype(np.float32),
        })  # fmt: skip
    a = open_(tmp_path / "a", states[0], "bert")
    (v,) = relate.compare(a, [open_(tmp_path / "b", states[1], "bert")]).verdicts
    assert not v.dependent and "cls.predictions.bias" not in {e.candidate for e in v.tensors}


def moe(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = "model.layers.0."
    out = {p + "block_sparse_moe.gate.weight": rng.standard_normal((E, H)).astype(np.float32),
           p + "self_attn.q_proj.weight": rng.standard_normal((H, H)).astype(np.float32)}  # fmt: skip
    for e in range(E):
        for w, shape in (("w1", (FFN, H)), ("w2", (H, FFN)), ("w3", (FFN, H))):
            out[f"{p}block_sparse_moe.experts.{e}.{w}.weight"] = rng.standard_normal(shape).astype(
                np.float32
            )
    return out


def test_experts_are_paired_by_their_router(tmp_path: Path) -> None:
    """Experts re-ordered with the router's rows, then everything cast to fp16: no value is
    equal, and only pairing each expert with the one its router row matches shows a copy."""
    base = moe(0)
    order = [2, 0, 3, 1]
    p = "model.layers.0.block_sparse_moe."
    moved = dict(base)
    moved[p + "gate.weight"] = base[p + "gate.weight"][order]
    for e, src in enumerate(order):
        for w in ("w1", "w2", "w3"):
            moved[f"{p}experts.{e}.{w}.weight"] = base[f"{p}experts.{src}.{w}.weight"]
    half = {k: v.astype(np.float16) for k, v in moved.items()}
    ref = open_(tmp_path / "base", base, "mixtral")
    (v,) = relate.compare(open_(tmp_path / "c", half, "mixtral"), [ref]).verdicts
    assert v.details["experts"] == {"0": order}
    assert v.relation == "copy", v.summary()


def test_a_permuted_copys_biases_follow_their_modules(tmp_path: Path) -> None:
    """Units re-ordered with their biases, then cast: the biases agree once lined up in the
    order their module's rows match in; a bias changed as well stays a change."""
    rng = np.random.default_rng(0)
    p = "model.layers.0.self_attn."
    base = {p + "q_proj.weight": rng.standard_normal((H, H)).astype(np.float32),
            p + "q_proj.bias": rng.standard_normal(H).astype(np.float32),
            p + "o_proj.weight": rng.standard_normal((H, H)).astype(np.float32)}  # fmt: skip
    perm = rng.permutation(H)
    moved = {p + "q_proj.weight": base[p + "q_proj.weight"][perm],
             p + "q_proj.bias": base[p + "q_proj.bias"][perm],
             p + "o_proj.weight": base[p + "o_proj.weight"][:, perm]}  # fmt: skip
    ref = open_(tmp_path / "base", base, "qwen2")
    half = {k: v.astype(np.float16) for k, v in moved.items()}
    (v,) = relate.compare(open_(tmp_path / "c", half, "qwen2"), [ref]).verdicts
    assert v.relation == "copy", v.summary()
    edited = dict(half)
    edited[p + "q_proj.bias"] = (moved[p + "q_proj.bias"] + 0.5).astype(np.float16)
    (v,) = relate.compare(open_(tmp_path / "e", edited, "qwen2"), [ref]).verdicts
    assert v.relation == "finetune", v.summary()


def test_a_short_permuted_vector_is_an_exact_multiset(tmp_path: Path) -> None:
    """A 32-entry key bias, re-ordered: equal as a multiset (was below the size the multiset
    test ran from); a vector of a few repeated values is not evidence of that kind."""
    rng = np.random.default_rng(0)
    bias = rng.standard_normal(32).astype(np.float32)
    assert relate._multiset_equal(bias[rng.permutation(32)], bias)
    few = np.repeat(np.arange(4, dtype=np.float32), 8)
    assert not relate._multiset_equal(few[::-1].copy(), few)


def test_a_residual_permutation_is_seen_through_the_embeddings(tmp_path: Path) -> None:
    """The residual stream's axis re-ordered in every tensor (norms commute with it), then cast:
    the map fitted on the token embeddings lines up the matrices and the norm gains."""
    rng = np.random.default_rng(1)
    p = "model.layers.0."
    base = {"model.embed_tokens.weight": rng.standard_normal((300, H)).astype(np.float32),
            p + "input_layernorm.weight": (1 + 0.1 * rng.standard_normal(H)).astype(np.float32),
            p + "self_attn.q_proj.weight": rng.standard_normal((H, H)).astype(np.float32),
            p + "self_attn.o_proj.weight": rng.standard_normal((H, H)).astype(np.float32),
            p + "mlp.up_proj.weight": rng.standard_normal((FFN, H)).astype(np.float32),
            p + "mlp.down_proj.weight": rng.standard_normal((H, FFN)).astype(np.float32)}  # fmt: skip
    perm = rng.permutation(H)
    moved = dict(base)
    moved["model.embed_tokens.weight"] = base["model.embed_tokens.weight"][:, perm]
    moved[p + "input_layernorm.weight"] = base[p + "input_layernorm.weight"][perm]
    for name in ("self_attn.q_proj", "mlp.up_proj"):  # read the residual: columns
        moved[p + name + ".weight"] = base[p + name + ".weight"][:, perm]
    for name in ("self_attn.o_proj", "mlp.down_proj"):  # write it: rows
        moved[p + name + ".weight"] = base[p + name + ".weight"][perm]
    half = {k: v.astype(np.float16) for k, v in moved.items()}
    ref = open_(tmp_path / "base", base, "llama")
    (v,) = relate.compare(open_(tmp_path / "c", half, "llama"), [ref]).verdicts
    assert v.relation == "copy", v.summary()
    norm = next(e for e in v.tensors if e.candidate == p + "input_layernorm.weight")
    assert norm.test == "matched" and norm.effect >= relate.EQUIVALENT
