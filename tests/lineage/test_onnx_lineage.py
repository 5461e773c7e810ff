"""ONNX in the lineage tiers (first part of issue 18): an ONNX file's initializers, inline or in
external data, are compared like safetensors tensors, so an ONNX re-publication of a model is a
copy of it and an ONNX export of a fine-tune is a fine-tune. (Anonymous initializer names and
MatMul's transposed weights need roles from the graph: not yet.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gate.lineage import models
from gate.lineage import relation as relate
from tests.lineage.test_relation import RNG, layered, model

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def onnx_model(path: Path, tensors: dict[str, np.ndarray], external: bool = False) -> models.Model:
    """The tensors as the initializers of an ONNX graph (names kept, as torch's exporter keeps
    parameter names), inline or in one external data file."""
    path.mkdir(parents=True, exist_ok=True)
    inits = [numpy_helper.from_array(v, k) for k, v in tensors.items()]
    graph = helper.make_graph(
        [helper.make_node("Identity", [k], [f"out.{i}"]) for i, k in enumerate(tensors)],
        "g",
        [],
        [
            helper.make_tensor_value_info(f"out.{i}", TensorProto.FLOAT, None)
            for i in range(len(tensors))
        ],
        initializer=inits,
    )
    kw = (
        {"save_as_external_data": True, "location": "model.onnx_data", "size_threshold": 0}
        if external
        else {}
    )
    onnx.save_model(helper.make_model(graph), str(path / "model.onnx"), **kw)
    return models.open_model(str(path), path.name)


@pytest.mark.parametrize("external", [False, True])
def test_an_onnx_republication_is_a_copy(tmp_path: Path, external: bool) -> None:
    base = layered()
    cand = onnx_model(tmp_path / "onnx", base, external)
    assert cand.problems == [] and set(cand.tensors) == set(base)
    (v,) = relate.compare(cand, [model(tmp_path / "base", base)]).verdicts
    assert v.relation == "copy" and {e.test for e in v.tensors} == {"exact"}


def test_an_onnx_export_of_a_fine_tune_is_a_fine_tune(tmp_path: Path) -> None:
    base = layered()
    tuned = {k: v + 0.2 * RNG.standard_normal(v.shape).astype(np.float32) for k, v in base.items()}
    (v,) = relate.compare(onnx_model(tmp_path / "t", tuned), [model(tmp_path / "b", base)]).verdicts
    assert v.relation == "finetune" and v.dependent
    other = onnx_model(tmp_path / "o", layered(seed=5), external=True)
    (v,) = relate.compare(other, [model(tmp_path / "b", base)]).verdicts
    assert v.relation == "independent"


def test_external_data_outside_the_model_folder_is_not_read(tmp_path: Path) -> None:
    onnx_model(tmp_path / "m", layered(), external=True)
    m = onnx.load(str(tmp_path / "m" / "model.onnx"), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../secret.bin"
    onnx.save_model(m, str(tmp_path / "m" / "model.onnx"))
    (tmp_path / "secret.bin").write_bytes((tmp_path / "m" / "model.onnx_data").read_bytes())
    opened = models.open_model(str(tmp_path / "m"), "m")
    assert opened.tensors == {}
    assert any("`..` leads outside" in p for p in opened.problems)
