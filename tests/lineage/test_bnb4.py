"""bitsandbytes 4-bit (NF4, FP4, with and without nested quantization) safetensors, as
transformers serialises them, dequantized for the lineage tiers and checked against
bitsandbytes' own dequantize_4bit (its CPU backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gate.lineage import models, tensors
from gate.lineage import relation as relate
from tests.helpers import write_st
from tests.lineage.test_relation import layered, model


@pytest.fixture(scope="module")
def functional() -> Any:
    """bitsandbytes, imported when a test here runs (its import takes seconds: not at
    collection, where every xdist worker would pay it)."""
    return pytest.importorskip("bitsandbytes.functional")


def bnb_model(
    path: Path, base: dict[str, np.ndarray], kind: str, nested: bool, functional: Any
) -> tuple[models.Model, dict[str, np.ndarray]]:
    import torch

    out: dict[str, np.ndarray] = {}
    expected = {}
    for name, w in base.items():
        if w.ndim != 2 or name == "model.embed_tokens.weight":
            out[name] = w
            continue
        q, state = functional.quantize_4bit(
            torch.from_numpy(w), blocksize=64, quant_type=kind, compress_statistics=nested
        )
        expected[name] = functional.dequantize_4bit(q, state).numpy()
        out[name] = q.numpy()
        for key, value in state.as_dict(packed=True).items():
            out[f"{name}.{key}"] = value.numpy()
    write_st(path / "model.safetensors", out)
    return models.open_model(str(path), path.name), expected


@pytest.mark.parametrize(("kind", "nested"), [("nf4", True), ("nf4", False), ("fp4", False)])
def test_bnb_4bit_dequantizes_as_bitsandbytes_does(
    tmp_path: Path, kind: str, nested: bool, functional: Any
) -> None:
    base = layered(rows=96, cols=64)
    m, expected = bnb_model(tmp_path / "q", base, kind, nested, functional)
    assert m.problems == [] and m.quantization == f"bitsandbytes {kind.upper()}"
    assert not any(".absmax" in n or "quant_state" in n for n in m.tensors)
    for name, want in expected.items():
        t = m.tensors[name]
        assert t.shape == base[name].shape and t.floating
        assert np.allclose(m.array(t), want, rtol=1e-6, atol=1e-6), name
        rows, cols = np.array([0, 3, t.shape[0] - 1]), np.array([2, 63])
        assert np.allclose(m.array(t, rows, cols), want[rows][:, cols], rtol=1e-6, atol=1e-6)
    (v,) = relate.compare(m, [model(tmp_path / "base", base)]).verdicts
    assert v.relation == "quantized" and v.details["quantization"] == f"bitsandbytes {kind.upper()}"
    (v,) = relate.compare(
        m, [model(tmp_path / "other", layered(rows=96, cols=64, seed=3))]
    ).verdicts
    assert v.relation == "independent"


def test_a_broken_quant_state_is_said_not_read(tmp_path: Path, functional: Any) -> None:
    base = layered(rows=96, cols=64)
    bnb_model(tmp_path / "q", base, "nf4", False, functional)
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(tmp_path / "q" / "model.safetensors"))
    key = "model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4"
    tensors[key] = np.frombuffer(b'{"quant_type": "nf4"}', np.uint8).copy()
    save_file(tensors, str(tmp_path / "q" / "model.safetensors"))
    m = models.open_model(str(tmp_path / "q"), "q")
    assert any("up_proj.weight: bitsandbytes 4-bit weight not read" in p for p in m.problems)
    assert (
        "model.layers.0.mlp.up_proj.weight" not in m.tensors
        or not m.tensors["model.layers.0.mlp.up_proj.weight"].floating
    )


def test_bnb_4bit_decodes_in_row_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, functional: Any
) -> None:
    base = layered(rows=96, cols=64)
    m, expected = bnb_model(tmp_path / "q", base, "nf4", True, functional)
    monkeypatch.setattr(tensors, "DECODE_BYTES", 1024)  # two rows per block
    for name, want in expected.items():
        assert np.allclose(m.array(m.tensors[name]), want, rtol=1e-6, atol=1e-6), name
