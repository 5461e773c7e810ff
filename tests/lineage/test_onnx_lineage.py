"""ONNX in the lineage tiers (first part of issue 18): an ONNX file's initializers, inline or in
external data, are compared like safetensors tensors, so an ONNX re-publication of a model is a
copy of it and an ONNX export of a fine-tune is a fine-tune. (Anonymous initializer names and
MatMul's transposed weights: roles from the graph, test_onnx_roles.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gate.lineage import models
from gate.lineage import relation as relate
from tests.helpers import write_st
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


# ---------------------------------------------------------------------- real exports
torch = pytest.importorskip("torch")


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 96)
        self.out = torch.nn.Linear(96, 64, bias=False)

    def forward(self, x: Any) -> Any:
        return self.out(torch.relu(self.fc(x)))


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList([_Block(), _Block()])

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x


def _state(net: Any, path: Path) -> models.Model:
    write_st(
        path / "model.safetensors", {k: v.detach().numpy() for k, v in net.state_dict().items()}
    )
    return models.open_model(str(path), path.name)


def _export(net: Any, path: Path, dynamo: bool = False) -> models.Model:
    import warnings

    path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 5, 64),), str(path / "model.onnx"), dynamo=dynamo)
    return models.open_model(str(path), path.name)


def test_the_torchscript_exporter_s_anonymous_transposed_weights_line_up(tmp_path: Path) -> None:
    """torch.onnx's TorchScript exporter (and Optimum) folds Linear's weight into an anonymous
    [in, out] initializer (`onnx::MatMul_19`) read by MatMul; the node name keeps the module."""
    torch.manual_seed(0)
    net = _Net().eval()
    onnx_m = _export(net, tmp_path / "onnx")
    assert onnx_m.tensors["layers.0.fc.weight"].transposed
    assert onnx_m.tensors["layers.0.fc.weight"].shape == (96, 64)
    (v,) = relate.compare(onnx_m, [_state(net, tmp_path / "st")]).verdicts
    assert v.relation == "copy" and {e.test for e in v.tensors} == {"exact"}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    (v,) = relate.compare(
        _export(net, tmp_path / "tuned"), [_state(_Net(), tmp_path / "x")]
    ).verdicts
    assert v.relation == "independent"  # a fresh _Net() is another model
    torch.manual_seed(0)
    (v,) = relate.compare(
        _export(net, tmp_path / "t2"), [_state(_Net(), tmp_path / "base")]
    ).verdicts
    assert v.relation == "finetune"  # the seed-0 _Net() is the base the noise was added to


def test_a_transposed_matrix_reads_like_its_source(tmp_path: Path) -> None:
    w = RNG.standard_normal((300, 40)).astype(np.float32)
    path = tmp_path / "t"
    path.mkdir()
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "anon"], ["y"], name="/blk/proj/MatMul")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 300])],
        initializer=[numpy_helper.from_array(w.T.copy(), "anon")],
    )
    onnx.save_model(helper.make_model(graph), str(path / "model.onnx"))
    m = models.open_model(str(path), "t")
    t = m.tensors["blk.proj.weight"]
    assert t.transposed and t.shape == (300, 40)
    assert np.array_equal(m.array(t), w)
    rows, cols = np.array([0, 7, 299]), np.array([1, 39])
    assert np.array_equal(m.array(t, rows, cols), w[rows][:, cols])
    src = model(tmp_path / "src", {"blk.proj.weight": w})
    assert models.same_bytes(m, t, src, src.tensors["blk.proj.weight"])
    w[5, 5] += 1
    other = model(tmp_path / "other", {"blk.proj.weight": w})
    assert not models.same_bytes(m, t, other, other.tensors["blk.proj.weight"])


@pytest.mark.slow
def test_a_dynamo_export_of_a_transformers_model_is_a_copy_of_it(tmp_path: Path) -> None:
    """torch.onnx's default exporter names rewritten weights `val_105` and records the module in
    each node's `pkg.torch.onnx.name_scopes`; rotary tables and masks become initializers too."""
    pytest.importorskip("onnxscript")
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )

    class Logits(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, ids: Any) -> Any:
            return self.m(input_ids=ids, use_cache=False).logits

    def export(m: Any, path: Path) -> models.Model:
        import warnings

        path.mkdir(parents=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Logits(m), (torch.randint(0, 128, (1, 8)),), str(path / "model.onnx"),
                              dynamo=True, verbose=False)  # fmt: skip
        return models.open_model(str(path), path.name)

    torch.manual_seed(0)
    base = LlamaForCausalLM(cfg).eval()
    base.save_pretrained(tmp_path / "base")
    ref = models.open_model(str(tmp_path / "base"), "base")
    (v,) = relate.compare(export(base, tmp_path / "onnx"), [ref]).verdicts
    assert v.relation == "copy", v.details
    # an optimiser that drops node names and metadata leaves `val_105`: roles from topology
    stripped = onnx.load(str(tmp_path / "onnx" / "model.onnx"))
    for node in stripped.graph.node:
        node.name = ""
        del node.metadata_props[:]
    (tmp_path / "stripped").mkdir()
    onnx.save_model(stripped, str(tmp_path / "stripped" / "model.onnx"))
    anonymous = models.open_model(str(tmp_path / "stripped"), "stripped")
    assert {t.role for t in anonymous.tensors.values()} >= {"blk.*.attn_q.weight", "output.weight"}
    (v,) = relate.compare(anonymous, [ref]).verdicts
    assert v.relation == "copy", v.details
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.02 * torch.randn_like(p))
    (v,) = relate.compare(export(base, tmp_path / "tuned"), [ref]).verdicts
    assert v.relation == "finetune" and v.dependent
    torch.manual_seed(1)
    (v,) = relate.compare(export(LlamaForCausalLM(cfg).eval(), tmp_path / "other"), [ref]).verdicts
    assert v.relation == "independent"


# ---------------------------------------------------------------------- quantized ONNX
@pytest.mark.parametrize("per_channel", [False, True])
def test_onnx_runtime_s_dynamic_int8_quantization_is_quantized(
    tmp_path: Path, per_channel: bool
) -> None:
    """ONNX Runtime's quantize_dynamic: MatMulInteger over `<w>_quantized` int8 weights, their
    zero points (varints) as its 4th input, `<w>_scale` applied after it."""
    import logging

    quantization = pytest.importorskip("onnxruntime.quantization")
    torch.manual_seed(0)
    net = _Net().eval()
    _export(net, tmp_path / "f32")
    (tmp_path / "q").mkdir()
    logging.disable(logging.WARNING)  # "consider pre-processing": not for a test model
    try:
        quantization.quantize_dynamic(
            str(tmp_path / "f32" / "model.onnx"),
            str(tmp_path / "q" / "model.onnx"),
            weight_type=quantization.QuantType.QInt8,
            per_channel=per_channel,
        )
    finally:
        logging.disable(logging.NOTSET)
    q = models.open_model(str(tmp_path / "q"), "q")
    kind = "per-channel" if per_channel else "per-tensor"
    assert q.quantization == f"ONNX int8 {kind}" and q.problems == []
    ref = _state(net, tmp_path / "st")
    w, r = q.tensors["layers.0.fc.weight"], ref.tensors["layers.0.fc.weight"]
    assert w.dtype == "I8" and w.transposed and w.shape == (96, 64)
    err = np.abs(q.array(w) - ref.array(r)).max()
    assert 0 < err <= np.abs(ref.array(r)).max() / 127  # within half a step of the largest scale
    rows, cols = np.array([3, 90]), np.array([0, 63])
    assert np.array_equal(q.array(w, rows, cols), q.array(w)[rows][:, cols])
    (v,) = relate.compare(q, [ref]).verdicts
    assert v.relation == "quantized" and v.details["quantization"] == f"ONNX int8 {kind}"
    (v,) = relate.compare(q, [_state(_Net(), tmp_path / "other")]).verdicts
    assert v.relation == "independent"


def test_a_qdq_weight_is_dequantized_per_channel(tmp_path: Path) -> None:
    """QDQ: DequantizeLinear(q, scale, zero_point, axis) feeding MatMul (uint8, per column of
    the stored [in, out] matrix = per output channel)."""
    w = RNG.standard_normal((40, 70)).astype(np.float32)  # torch layout [out, in]
    stored = w.T  # [in, out]
    scale = (np.abs(stored).max(axis=0) / 127).astype(np.float32)
    zero = np.full(40, 128, np.uint8)
    q = np.clip(np.round(stored / scale) + 128, 0, 255).astype(np.uint8)
    path = tmp_path / "qdq"
    path.mkdir()
    graph = helper.make_graph(
        [
            helper.make_node(
                "DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="/blk/proj/DQ", axis=1
            ),
            helper.make_node("MatMul", ["x", "wd"], ["y"], name="/blk/proj/MatMul"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 70])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 40])],
        initializer=[
            numpy_helper.from_array(q, "wq"),
            numpy_helper.from_array(scale, "ws"),
            numpy_helper.from_array(zero, "wz"),
        ],
    )
    onnx.save_model(helper.make_model(graph), str(path / "model.onnx"))
    m = models.open_model(str(path), "qdq")
    t = m.tensors["blk.proj.weight"]
    assert t.transposed and t.shape == (40, 70) and m.quantization == "ONNX uint8 per-channel"
    expected = ((q.astype(np.float32) - 128) * scale).T
    assert np.allclose(m.array(t), expected)
    assert np.abs(m.array(t) - w).max() <= scale.max() / 2 + 1e-6


def _pack4(levels: np.ndarray) -> bytes:
    """4-bit levels as ONNX stores INT4/UINT4: two per byte, the first in the low nibble."""
    flat = (levels.reshape(-1) & 0x0F).astype(np.uint8)
    flat = np.concatenate([flat, np.zeros(len(flat) % 2, np.uint8)])
    return (flat[0::2] | (flat[1::2] << 4)).tobytes()


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("mode", ["per-tensor", "per-channel", "blockwise"])
@pytest.mark.parametrize("consumer", ["MatMul", "Gather"])
def test_a_4bit_qdq_weight_is_dequantized_as_onnx_defines_it(
    tmp_path: Path, signed: bool, mode: str, consumer: str
) -> None:
    """INT4/UINT4 DequantizeLinear (opset 21), per tensor, per channel and per block, checked
    against onnx's reference implementation evaluating the same file."""
    from onnx.reference import ReferenceEvaluator

    rows, cols, block = 36, 70, 16  # stored [rows, cols]; an odd count of 4-bit values too
    levels = RNG.integers(-8, 8, (rows, cols)) if signed else RNG.integers(0, 16, (rows, cols))
    axis = 1 if consumer == "MatMul" else 0  # output channels: columns of [in, out], rows of E
    scale_shape = {"per-tensor": (), "per-channel": (levels.shape[axis],)}.get(mode)
    if scale_shape is None:
        scale_shape = (rows, -(-cols // block)) if axis == 1 else (-(-rows // block), cols)
    scale = RNG.uniform(0.01, 0.1, scale_shape).astype(np.float32)
    zero = RNG.integers(-8, 8, scale_shape) if signed else RNG.integers(0, 16, scale_shape)
    kind = TensorProto.INT4 if signed else TensorProto.UINT4
    attrs = {} if mode == "per-tensor" else {"axis": axis}
    if mode == "blockwise":
        attrs["block_size"] = block
    inputs = ["x", "wd"] if consumer == "MatMul" else ["wd", "ids"]
    graph = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], **attrs),
            helper.make_node(consumer, inputs, ["y"], name="/blk/proj/" + consumer),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, [3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[
            helper.make_tensor("wq", kind, levels.shape, _pack4(levels), raw=True),
            numpy_helper.from_array(scale, "ws"),
            helper.make_tensor("wz", kind, zero.shape, _pack4(zero), raw=True),
        ],
    )
    path = tmp_path / "q4"
    path.mkdir()
    model_proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.save_model(model_proto, str(path / "model.onnx"))
    feeds = {"x": np.zeros((1, rows), np.float32), "ids": np.arange(3)}
    (expected,) = ReferenceEvaluator(model_proto).run(["wd"], feeds)
    m = models.open_model(str(path), "q4")
    (t,) = m.tensors.values()
    kind_name = "int4" if signed else "uint4"
    assert m.problems == [] and m.quantization == f"ONNX {kind_name} {mode}"
    shown = expected.T if consumer == "MatMul" else expected
    assert t.shape == shown.shape and np.allclose(m.array(t), shown, atol=1e-6)
    pick_r, pick_c = np.array([0, 5, t.shape[0] - 1]), np.array([1, 17, t.shape[1] - 1])
    assert np.allclose(m.array(t, pick_r, pick_c), shown[pick_r][:, pick_c], atol=1e-6)


def test_qlinear_matmul_weights_are_dequantized(tmp_path: Path) -> None:
    """QLinearMatMul(a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero): the stored b is
    the weight, per output column."""
    from onnx.reference import ReferenceEvaluator

    q = RNG.integers(-127, 128, (24, 10)).astype(np.int8)
    scale = RNG.uniform(0.01, 0.1, 10).astype(np.float32)
    zero = np.zeros(10, np.int8)
    graph = helper.make_graph(
        [
            helper.make_node(
                "QLinearMatMul",
                ["a", "as", "az", "b", "bs", "bz", "ys", "yz"],
                ["y"],
                name="/blk/proj/QLinearMatMul",
            ),
            helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["check"], axis=1),
        ],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.INT8, [1, 24])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [1, 10])],
        initializer=[
            numpy_helper.from_array(np.array(0.1, np.float32), "as"),
            numpy_helper.from_array(np.array(0, np.int8), "az"),
            numpy_helper.from_array(q, "b"),
            numpy_helper.from_array(scale, "bs"),
            numpy_helper.from_array(zero, "bz"),
            numpy_helper.from_array(np.array(0.2, np.float32), "ys"),
            numpy_helper.from_array(np.array(0, np.int8), "yz"),
        ],
    )
    model_proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    (expected,) = ReferenceEvaluator(model_proto).run(["check"], {"a": np.zeros((1, 24), np.int8)})
    (tmp_path / "m").mkdir()
    # the check node reads b too: drop it, so b has the one reader a weight has
    del model_proto.graph.node[1]
    onnx.save_model(model_proto, str(tmp_path / "m" / "model.onnx"))
    m = models.open_model(str(tmp_path / "m"), "m")
    t = m.tensors["blk.proj.weight"]
    assert m.quantization == "ONNX int8 per-channel" and t.transposed
    assert np.allclose(m.array(t), expected.T)


def test_a_quantized_weight_in_an_unknown_layout_is_reported(tmp_path: Path) -> None:
    """A DequantizeLinear weight whose scales fit no layout is named in the problems, never
    dropped in silence (the verdict then says its evidence is partial)."""
    graph = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"], axis=1),
            helper.make_node("MatMul", ["x", "wd"], ["y"], name="/blk/proj/MatMul"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
        initializer=[
            numpy_helper.from_array(np.ones((8, 6), np.int8), "wq"),
            numpy_helper.from_array(np.ones(5, np.float32), "ws"),  # 5 scales for 6 columns
        ],
    )
    (tmp_path / "m").mkdir()
    onnx.save_model(helper.make_model(graph), str(tmp_path / "m" / "model.onnx"))
    m = models.open_model(str(tmp_path / "m"), "m")
    assert m.tensors == {}
    unread = "model.onnx: tensor wq: I8 weight of DequantizeLinear not dequantized"
    assert m.problems == [unread, "no readable safetensors, GGUF, ONNX or torch tensors"]


def test_zero_points_kept_as_varints_are_signed() -> None:
    from gate.formats import onnx as gate_onnx

    zp = helper.make_tensor("z", TensorProto.INT8, [3], [-5, 0, 7])  # int32_data varints
    data = zp.SerializeToString()
    walk = gate_onnx._Walk(gate_onnx._Source(len(data), lambda at, n: data[at : at + n]))
    walk.tensor(0, len(data))
    (t,) = walk.tensors
    assert t.encoded and t.varints is not None
    assert gate_onnx.varint_values(t, lambda at, n: data[at : at + n]) == [-5, 0, 7]


@pytest.mark.parametrize("symmetric", [True, False])
def test_matmul_nbits_4bit_is_dequantized_as_onnx_runtime_computes(
    tmp_path: Path, symmetric: bool
) -> None:
    """ONNX Runtime's MatMulNBits quantizer (4-bit blocks along K, zero points packed per row
    when asymmetric): the dequantized weights reproduce ONNX Runtime's own output."""
    import logging

    ort = pytest.importorskip("onnxruntime")
    nbits = pytest.importorskip("onnxruntime.quantization.matmul_nbits_quantizer")
    torch.manual_seed(0)
    net = _Net().eval()
    _export(net, tmp_path / "f32")
    logging.disable(logging.WARNING)
    try:
        quantizer = nbits.MatMulNBitsQuantizer(
            onnx.load(str(tmp_path / "f32" / "model.onnx")), block_size=32, is_symmetric=symmetric
        )
        quantizer.process()
    finally:
        logging.disable(logging.NOTSET)
    (tmp_path / "q").mkdir()
    onnx.save_model(quantizer.model.model, str(tmp_path / "q" / "model.onnx"))
    q = models.open_model(str(tmp_path / "q"), "q")
    assert q.quantization == "ONNX MatMulNBits 4-bit" and q.problems == []
    w = {name: q.array(t) for name, t in q.tensors.items()}
    x = RNG.standard_normal((1, 5, 64)).astype(np.float32)
    h = x
    for i in range(2):
        h = np.maximum(h @ w[f"layers.{i}.fc.weight"].T + w[f"layers.{i}.fc.bias"], 0)
        h = h @ w[f"layers.{i}.out.weight"].T
    session = ort.InferenceSession(str(tmp_path / "q" / "model.onnx"))
    (name,) = [i.name for i in session.get_inputs()]
    (got,) = session.run(None, {name: x})
    assert np.allclose(got, h, atol=1e-4), np.abs(got - h).max()
    (v,) = relate.compare(q, [_state(net, tmp_path / "st")]).verdicts
    assert v.relation == "quantized" and v.details["quantization"] == "ONNX MatMulNBits 4-bit"


def test_two_weights_of_one_module_keep_distinct_names(tmp_path: Path) -> None:
    a, b = (RNG.standard_normal((40, 30)).astype(np.float32) for _ in range(2))
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "anon_a"], ["y"], name="/blk/proj/MatMul"),
            helper.make_node("MatMul", ["y2", "anon_b"], ["z"], name="/blk/proj/MatMul_1"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 40])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 30])],
        initializer=[numpy_helper.from_array(a, "anon_a"), numpy_helper.from_array(b, "anon_b")],
    )
    (tmp_path / "m").mkdir()
    onnx.save_model(helper.make_model(graph), str(tmp_path / "m" / "model.onnx"))
    m = models.open_model(str(tmp_path / "m"), "m")
    assert set(m.tensors) == {"blk.proj.weight", "anon_b"} and m.problems == []
