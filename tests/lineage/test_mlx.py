"""MLX affine-quantized safetensors (mlx-lm's layout: uint32 `.weight`, `.scales`, `.biases`,
config.json `quantization`) dequantized for the lineage tiers and checked against MLX's own
mlx.core.dequantize (its CPU build installs here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gate.lineage import models
from gate.lineage import relation as relate
from tests.helpers import write_st
from tests.lineage.test_relation import layered, model

mx = pytest.importorskip("mlx.core")


def mlx_model(
    path: Path, base: dict[str, np.ndarray], bits: int
) -> tuple[models.Model, dict[str, np.ndarray]]:
    out: dict[str, np.ndarray] = {}
    expected = {}
    for name, w in base.items():
        if w.ndim != 2:
            out[name] = w
            continue
        q, scales, biases = mx.quantize(mx.array(w), group_size=32, bits=bits)
        scales, biases = scales.astype(mx.float16), biases.astype(mx.float16)  # as stored
        prefix = name.removesuffix("weight")
        out[name] = np.array(q)
        out[prefix + "scales"] = np.array(scales)
        out[prefix + "biases"] = np.array(biases)
        # MLX computes in the scales' dtype: the reference in float32 from the stored halves
        wide = scales.astype(mx.float32), biases.astype(mx.float32)
        expected[name] = np.array(mx.dequantize(q, *wide, group_size=32, bits=bits))
    write_st(path / "model.safetensors", out)
    config = {"model_type": "llama", "quantization": {"group_size": 32, "bits": bits}}
    (path / "config.json").write_text(json.dumps(config))
    return models.open_model(str(path), path.name), expected


@pytest.mark.parametrize("bits", [4, 8, 2])
def test_mlx_weights_dequantize_as_mlx_does(tmp_path: Path, bits: int) -> None:
    base = layered(rows=96, cols=64)
    m, expected = mlx_model(tmp_path / "q", base, bits)
    assert m.problems == [] and m.quantization == f"MLX {bits}-bit"
    assert not any(n.endswith((".scales", ".biases")) for n in m.tensors)
    for name, want in expected.items():
        t = m.tensors[name]
        assert t.shape == base[name].shape and t.floating
        assert np.allclose(m.array(t), want, rtol=1e-6, atol=1e-6), name
        rows, cols = np.array([0, 2, t.shape[0] - 1]), np.array([5, 40])
        assert np.allclose(m.array(t, rows, cols), want[rows][:, cols], rtol=1e-6, atol=1e-6)
    if bits >= 4:
        (v,) = relate.compare(m, [model(tmp_path / "base", base)]).verdicts
        assert v.relation == "quantized" and v.details["quantization"] == f"MLX {bits}-bit"
        other = model(tmp_path / "other", layered(rows=96, cols=64, seed=4))
        (v,) = relate.compare(m, [other]).verdicts
        assert v.relation == "independent"


def test_mlx_3bit_is_said_not_read(tmp_path: Path) -> None:
    write_st(
        tmp_path / "q" / "model.safetensors",
        {
            "a.weight": np.zeros((4, 6), np.uint32),
            "a.scales": np.ones((4, 2), np.float16),
            "a.biases": np.zeros((4, 2), np.float16),
        },
    )
    (tmp_path / "q" / "config.json").write_text(
        json.dumps({"quantization": {"group_size": 32, "bits": 3}})
    )
    m = models.open_model(str(tmp_path / "q"), "q")
    assert any("MLX 3-bit weights not read" in p for p in m.problems)
    assert not m.tensors["a.weight"].floating
