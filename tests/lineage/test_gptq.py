"""GPTQ checkpoints (AutoGPTQ / GPTQModel / transformers) dequantized for the lineage tiers.

No GPTQ package installs here without its GPU kernels, so the packing is validated against an
independent writer (tests/zoo/packings.py) that follows the published layout (AutoGPTQ's QuantLinear.pack: input
rows packed 32/bits per int32 lowest bits first, zero points packed the same way along the
output dimension and stored minus one in the original "gptq" checkpoint format), on
asymmetric 4-bit, 8-bit and 2-bit layers with and without act-order (a permuted g_idx)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gate.lineage import models
from gate.lineage import relation as relate
from tests.helpers import write_st
from tests.lineage.test_relation import layered, model
from tests.zoo import packings

RNG = np.random.default_rng(5)


def gptq_model(
    path: Path, base: dict[str, np.ndarray], bits: int = 4, act_order: bool = False, v1: bool = True
) -> tuple[models.Model, dict[str, np.ndarray]]:
    out: dict[str, np.ndarray] = {}
    expected = {}
    for name, w in base.items():
        if w.ndim == 2 and name != "model.embed_tokens.weight":
            parts, deq = packings.gptq(w, bits, 32, act_order, v1, RNG)
            prefix = name.removesuffix("weight")
            out.update({prefix + k: v for k, v in parts.items()})
            expected[name] = deq
        else:
            out[name] = w.astype(np.float16)
    write_st(path / "model.safetensors", out)
    qc = {"quant_method": "gptq", "bits": bits, "group_size": 32, "desc_act": act_order}
    qc["checkpoint_format"] = "gptq" if v1 else "gptq_v2"
    (path / "config.json").write_text(
        json.dumps({"model_type": "llama", "quantization_config": qc})
    )
    return models.open_model(str(path), path.name), expected


@pytest.mark.parametrize(
    ("bits", "act_order", "v1"),
    [(4, False, True), (4, True, True), (8, False, False), (2, True, False)],
)
def test_gptq_layers_dequantize_to_what_was_packed(
    tmp_path: Path, bits: int, act_order: bool, v1: bool
) -> None:
    base = layered(rows=96, cols=64)
    m, expected = gptq_model(tmp_path / "q", base, bits, act_order, v1)
    assert m.problems == [] and m.quantization == f"GPTQ {bits}-bit"
    for name, deq in expected.items():
        t = m.tensors[name]
        assert t.shape == base[name].shape and t.floating
        assert np.allclose(m.array(t), deq, atol=1e-3), name
        rows, cols = np.array([0, 5, t.shape[0] - 1]), np.array([1, t.shape[1] - 2])
        assert np.allclose(m.array(t, rows, cols), deq[rows][:, cols], atol=1e-3)
    assert not any(n.endswith((".qweight", ".qzeros", ".scales", ".g_idx")) for n in m.tensors)


def test_a_gptq_quantization_of_a_model_is_quantized(tmp_path: Path) -> None:
    base = layered(rows=96, cols=64)
    q, _ = gptq_model(tmp_path / "q", base, 4, act_order=True)
    (v,) = relate.compare(q, [model(tmp_path / "base", base)]).verdicts
    assert v.relation == "quantized" and v.details["quantization"] == "GPTQ 4-bit"
    (v,) = relate.compare(
        q, [model(tmp_path / "other", layered(rows=96, cols=64, seed=9))]
    ).verdicts
    assert v.relation == "independent"


def test_gptq_without_its_config_is_said_not_read(tmp_path: Path) -> None:
    base = layered(rows=96, cols=64)
    gptq_model(tmp_path / "q", base)
    (tmp_path / "q" / "config.json").write_text("{}")
    m = models.open_model(str(tmp_path / "q"), "q")
    assert any("no GPTQ/AWQ quantization config" in p for p in m.problems)
    assert "model.layers.0.self_attn.q_proj.weight" not in m.tensors


def test_awq_gemm_layers_dequantize_and_are_quantized(tmp_path: Path) -> None:
    base = layered(rows=96, cols=64)
    out: dict[str, np.ndarray] = {}
    expected = {}
    for name, w in base.items():
        if w.ndim == 2 and name != "model.embed_tokens.weight":
            parts, expected[name] = packings.awq(w, 32)
            out.update({name.removesuffix("weight") + k: v for k, v in parts.items()})
        else:
            out[name] = w.astype(np.float16)
    path = tmp_path / "awq"
    write_st(path / "model.safetensors", out)
    qc = {"quant_method": "awq", "bits": 4, "group_size": 32, "version": "gemm", "zero_point": True}
    (path / "config.json").write_text(
        json.dumps({"model_type": "llama", "quantization_config": qc})
    )
    m = models.open_model(str(path), "awq")
    assert m.problems == [] and m.quantization == "AWQ 4-bit"
    for name, deq in expected.items():
        assert np.allclose(m.array(m.tensors[name]), deq, atol=1e-3), name
        rows = np.array([1, 9, 63])
        assert np.allclose(m.array(m.tensors[name], rows), deq[rows], atol=1e-3)
    (v,) = relate.compare(m, [model(tmp_path / "base", base)]).verdicts
    assert v.relation == "quantized" and v.details["quantization"] == "AWQ 4-bit"


def test_a_hostile_g_idx_is_refused_not_indexed(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    gptq_model(tmp_path / "q", layered(rows=96, cols=64), 4, act_order=True)
    path = tmp_path / "q" / "model.safetensors"
    tensors = load_file(str(path))
    key = "model.layers.0.mlp.up_proj.g_idx"
    tensors[key] = np.full_like(tensors[key], 1_000_000)  # a group that does not exist
    save_file(tensors, str(path))
    m = models.open_model(str(tmp_path / "q"), "q")
    assert any("up_proj.qweight: GPTQ tensors of inconsistent shapes" in p for p in m.problems)
    assert "model.layers.0.mlp.up_proj.weight" not in m.tensors
    (v,) = relate.compare(m, [model(tmp_path / "base", layered(rows=96, cols=64))]).verdicts
    assert v.relation == "quantized"  # the other layers still say so
