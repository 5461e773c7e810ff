"""The lineage engine on small synthetic models: sampling, hostile files, edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from gate.errors import GateError, NothingToCheck
from gate.lineage import models
from gate.lineage import relation as relate
from gate.lineage.command import audit
from tests.helpers import write_gguf, write_st

RNG = np.random.default_rng(11)


def layered(
    rows: int = 96, cols: int = 64, layers: int = 2, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {"model.embed_tokens.weight": rng.standard_normal((rows, cols)).astype(np.float32)}
    for i in range(layers):
        p = f"model.layers.{i}."
        out[p + "self_attn.q_proj.weight"] = rng.standard_normal((cols, cols)).astype(np.float32)
        out[p + "mlp.up_proj.weight"] = rng.standard_normal((rows, cols)).astype(np.float32)
        out[p + "input_layernorm.weight"] = np.ones(cols, np.float32)
    return out


def model(path: Path, tensors: dict[str, np.ndarray]) -> models.Model:
    write_st(path / "model.safetensors", tensors)
    return models.open_model(str(path), path.name)


def test_large_matrices_are_tested_on_a_sample_of_rows(tmp_path: Path) -> None:
    base = layered(rows=relate.MAX_ROWS + 900)
    tuned = {k: v + 0.2 * RNG.standard_normal(v.shape).astype(np.float32) for k, v in base.items()}
    ref = model(tmp_path / "base", base)
    report = relate.compare(model(tmp_path / "tuned", tuned), [ref])
    (v,) = report.verdicts
    assert v.relation == "finetune" and v.dependent
    other = relate.compare(model(tmp_path / "other", layered(rows=relate.MAX_ROWS + 900, seed=5)),
                           [ref])  # fmt: skip
    assert other.verdicts[0].relation == "independent"


def test_a_copy_cast_to_bf16_streams_in_blocks(tmp_path: Path) -> None:
    import ml_dtypes

    base = layered(rows=relate.RECAST_BLOCK + 10)
    cast = {k: v.astype(ml_dtypes.bfloat16) for k, v in base.items()}
    (v,) = relate.compare(model(tmp_path / "c", cast), [model(tmp_path / "b", base)]).verdicts
    assert v.relation == "copy"
    assert {e.test for e in v.tensors} == {"recast"}
    cast["model.layers.1.mlp.up_proj.weight"][-1, -1] += 1  # one value in the last block differs
    (v,) = relate.compare(model(tmp_path / "d", cast), [model(tmp_path / "b", base)]).verdicts
    assert v.relation == "finetune"


def test_a_model_checked_against_its_own_cast_or_quantization(tmp_path: Path) -> None:
    """The other way round: an fp32 model against its bf16 re-publication is still a copy
    (the wider side rounds to the narrower), and against its 8-bit GGUF it is `quantized`,
    the details saying which side is (was: `finetune`, a training step nobody took)."""
    import ml_dtypes

    base = layered(rows=relate.RECAST_BLOCK + 10)
    cast = {k: v.astype(ml_dtypes.bfloat16) for k, v in base.items()}
    fp32 = model(tmp_path / "b", base)
    (v,) = relate.compare(fp32, [model(tmp_path / "c", cast)]).verdicts
    assert v.relation == "copy" and {e.test for e in v.tensors} == {"recast"}
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 4)
    renamed = {names.get_name(k, try_suffixes=(".weight", ".bias")): v for k, v in base.items()}
    q8 = write_gguf(tmp_path / "q8" / "model.gguf", renamed, quantize="Q8_0")
    (v,) = relate.compare(fp32, [models.open_model(str(q8.parent), "q8")]).verdicts
    assert v.relation == "quantized" and v.details["quantized_side"] == "reference"
    assert v.details["quantization"] == "Q8_0"
    (v,) = relate.compare(models.open_model(str(q8.parent), "q8"), [fp32]).verdicts
    assert v.relation == "quantized" and "quantized_side" not in v.details


def test_a_model_of_constants_is_inconclusive(tmp_path: Path) -> None:
    const = {"norm.weight": np.ones(64, np.float32), "bias": np.zeros(64, np.float32)}
    (v,) = relate.compare(model(tmp_path / "c", const), [model(tmp_path / "b", layered())]).verdicts
    assert v.relation == "inconclusive" and v.p_value is None
    assert v.notes == ("no tensor of the candidate could be compared with the reference",)


def test_truncated_and_unreadable_files_are_problems_not_crashes(tmp_path: Path) -> None:
    good = tmp_path / "m"
    write_st(good / "a.safetensors", layered())
    data = (good / "a.safetensors").read_bytes()
    (good / "b.safetensors").write_bytes(data[: len(data) // 2])
    (good / "c.safetensors").write_bytes(b"\xff" * 7)
    m = models.open_model(str(good))
    assert len(m.problems) == 2 and all("safetensors" in p for p in m.problems)
    assert len(m.tensors) == len(layered())
    empty = tmp_path / "e"
    empty.mkdir()
    (empty / "x.safetensors").write_bytes(data[:100])
    with pytest.raises(
        NothingToCheck, match="no readable safetensors, GGUF, ONNX or torch tensors"
    ):
        audit(str(empty), [str(good)])
    with pytest.raises(GateError, match="no such file or folder"):
        audit(str(tmp_path / "missing"), [str(good)])


def test_gguf_types_gguf_py_cannot_dequantize_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "q" / "model.gguf"
    path.parent.mkdir()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("blk.0.attn_q.weight", np.zeros((4, 292), np.uint8),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_K)  # fmt: skip
    w.add_tensor("blk.0.ffn_up.weight", RNG.standard_normal((8, 32)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    m = models.open_model(str(path.parent))
    assert list(m.tensors) == ["blk.0.ffn_up.weight"]
    assert m.problems == ["model.gguf: tensor blk.0.attn_q.weight: Q8_K cannot be dequantized;"
                          " skipped"]  # fmt: skip
    assert m.config["model_type"] == "llama"


def test_hostile_json_beside_the_weights_is_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write_st(folder / "model.safetensors", layered())
    (folder / "config.json").write_text("[" * 100_000)
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": "x", "b": 1}}}))
    m = models.open_model(str(folder))
    assert m.config == {} and m.vocab == {"b": 1}


def test_names_reduce_to_their_container(tmp_path: Path) -> None:
    base = layered()
    renamed = {"wrapper.inner." + k: v + 0.1 for k, v in base.items()}
    c, r = model(tmp_path / "c", renamed), model(tmp_path / "b", base)
    assert {t.role for t in c.tensors.values()} == {t.role for t in r.tensors.values()}


def test_a_one_bit_edit_of_a_sampled_matrix_is_an_edit_not_a_transform(tmp_path: Path) -> None:
    base = layered(rows=relate.MAX_ROWS + 900)
    edited = {k: v.copy() for k, v in base.items()}
    edited["model.layers.0.mlp.up_proj.weight"].view(np.uint32)[-1, -1] ^= 1
    (v,) = relate.compare(model(tmp_path / "e", edited), [model(tmp_path / "b", base)]).verdicts
    assert v.relation == "finetune"
    assert v.details["summary"].startswith("nearly identical: 1 of")
    permuted = {k: v.copy() for k, v in base.items()}  # a transform stays a copy
    key = "model.layers.0.mlp.up_proj.weight"
    permuted[key] = permuted[key][::-1].copy()
    (v,) = relate.compare(model(tmp_path / "p", permuted), [model(tmp_path / "b2", base)]).verdicts
    assert "nearly identical" not in str(v.details.get("summary"))
