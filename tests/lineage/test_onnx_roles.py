"""Roles of anonymous ONNX weights from the graph's topology (issue 18): an export whose node
names and metadata say nothing (`val_105`, no module path) still lines up with its source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate.formats import onnx as onnx_format
from gate.lineage import models, onnx_roles
from gate.lineage import relation as relate
from tests.lineage.test_relation import model

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

H, FFN, VOCAB, LAYERS = 32, 64, 48, 2


def llama(seed: int = 0, noise: float = 0.0, base: dict[str, np.ndarray] | None = None) -> dict:
    """A Llama-shaped state dict ([out, in] matrices, as torch keeps them)."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    out = {"model.embed_tokens.weight": w(VOCAB, H), "lm_head.weight": w(VOCAB, H)}
    out["model.norm.weight"] = 1 + 0.1 * w(H)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for name, shape in (("self_attn.q_proj", (H, H)), ("self_attn.k_proj", (H, H)),
                            ("self_attn.v_proj", (H, H)), ("self_attn.o_proj", (H, H)),
                            ("mlp.gate_proj", (FFN, H)), ("mlp.up_proj", (FFN, H)),
                            ("mlp.down_proj", (H, FFN))):  # fmt: skip
            out[p + name + ".weight"] = w(*shape)
        out[p + "input_layernorm.weight"] = 1 + 0.1 * w(H)
        out[p + "post_attention_layernorm.weight"] = 1 + 0.1 * w(H)
    if base is not None:
        out = {k: v + noise * w(*v.shape) for k, v in base.items()}
    return out


class _Graph:
    """An exporter's graph with every weight renamed `w<N>` and no node names."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.state, self.nodes, self.inits, self.n = state, [], [], 0
        self.const("two", np.array(2.0, np.float32))
        self.const("eps", np.array(1e-6, np.float32))

    def value(self) -> str:
        self.n += 1
        return f"t{self.n}"

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def weight(self, key: str, transpose: bool = True) -> str:
        array = self.state[key]
        return self.const(f"w{len(self.inits)}", array.T.copy() if transpose else array)

    def op(self, op: str, *inputs: str, **attrs: object) -> str:
        out = self.value()
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def norm(self, x: str, key: str) -> str:
        if key.replace("weight", "bias") in self.state:  # LayerNorm: the operator
            bias = self.weight(key.replace("weight", "bias"), transpose=False)
            return self.op("LayerNormalization", x, self.weight(key, transpose=False), bias)
        mean = self.op("ReduceMean", self.op("Pow", x, "two"), axes=[-1])
        scaled = self.op(
            "Mul", x, self.op("Reciprocal", self.op("Sqrt", self.op("Add", mean, "eps")))
        )
        return self.op("Mul", scaled, self.weight(key, transpose=False))

    def linear(self, x: str, key: str) -> str:
        y = self.op("MatMul", x, self.weight(key))
        bias = key.replace("weight", "bias")
        return self.op("Add", y, self.weight(bias, transpose=False)) if bias in self.state else y

    def attention(self, x: str, kv: str, p: str, fused: bool = False) -> str:
        if fused:
            w = np.concatenate([self.state[p + f"self_attn.{n}_proj.weight"] for n in "qkv"])
            qkv = self.op("MatMul", x, self.const(f"w{len(self.inits)}", w.T.copy()))
            q, k, v = (f"{qkv}_{i}" for i in range(3))
            self.nodes.append(helper.make_node("Split", [qkv], [q, k, v], axis=-1, num_outputs=3))
        else:
            q = self.linear(x, p + "self_attn.q_proj.weight")
            k = self.linear(kv, p + "self_attn.k_proj.weight")
            v = self.linear(kv, p + "self_attn.v_proj.weight")
        scores = self.op("MatMul", q, self.op("Transpose", k, perm=[0, 2, 1]))
        context = self.op("MatMul", self.op("Softmax", scores, axis=-1), v)
        return self.linear(context, p + "self_attn.o_proj.weight")

    def build(self, path: Path, fused: bool = False, cross: bool = False) -> Path:
        x = self.op("Gather", self.weight("model.embed_tokens.weight", transpose=False), "ids")
        for i in range(LAYERS):
            p = f"model.layers.{i}."
            n = self.norm(x, p + "input_layernorm.weight")
            x = self.op("Add", x, self.attention(n, n, p, fused))
            if cross:  # a decoder's cross-attention over the encoder's states: a second block
                x = self.op("Add", x, self.attention(x, "encoder", p))
            n = self.norm(x, p + "post_attention_layernorm.weight")
            up = self.linear(n, p + "mlp.up_proj.weight")
            if p + "mlp.gate_proj.weight" in self.state:
                gate = self.linear(n, p + "mlp.gate_proj.weight")
                up = self.op("Mul", self.op("Mul", gate, self.op("Sigmoid", gate)), up)
            else:
                up = self.op("Gelu", up, domain="com.microsoft")
            x = self.op("Add", x, self.linear(up, p + "mlp.down_proj.weight"))
        logits = self.linear(self.norm(x, "model.norm.weight"), "lm_head.weight")
        self.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
        inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5])]
        if cross:
            inputs.append(helper.make_tensor_value_info("encoder", TensorProto.FLOAT, [1, 7, H]))
        graph = helper.make_graph(
            self.nodes,
            "g",
            inputs,
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5, VOCAB])],
            initializer=self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        path.mkdir(parents=True, exist_ok=True)
        onnx.save_model(m, str(path / "model.onnx"))
        return path


def _roles(path: Path) -> dict[str, str]:
    header = onnx_format.read(str(path / "model.onnx"))
    return onnx_roles.roles(header.graph, {t.name: t.shape for t in header.tensors})


def test_anonymous_weights_get_their_roles_from_the_graph(tmp_path: Path) -> None:
    base = llama()
    path = _Graph(base).build(tmp_path / "onnx")
    onnx.checker.check_model(str(path / "model.onnx"), full_check=True)
    roles = _roles(path)
    per_layer = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                 "ffn_gate", "ffn_up", "ffn_down")  # fmt: skip
    wanted = [f"blk.{i}.{r}.weight" for i in range(LAYERS) for r in per_layer]
    wanted += ["token_embd.weight", "output_norm.weight", "output.weight"]
    assert sorted(roles.values()) == sorted(wanted)
    m = models.open_model(str(path), "onnx")
    assert m.problems == [] and len(m.tensors) == len(base)
    ref = model(tmp_path / "base", base)
    for t in m.tensors.values():  # each lines up with its source's tensor, values and all
        (r,) = (x for x in ref.tensors.values() if (x.role, x.layer) == (t.role, t.layer))
        assert np.array_equal(m.array(t), ref.array(r)), t.name
    (v,) = relate.compare(m, [ref]).verdicts
    assert v.relation == "copy" and {e.test for e in v.tensors} == {"exact"}


def test_an_anonymous_export_of_a_fine_tune_is_a_fine_tune(tmp_path: Path) -> None:
    ref = model(tmp_path / "base", llama())
    tuned = _Graph(llama(seed=3, noise=0.05, base=llama())).build(tmp_path / "tuned")
    (v,) = relate.compare(models.open_model(str(tuned), "t"), [ref]).verdicts
    assert v.relation == "finetune" and v.dependent
    other = _Graph(llama(seed=4)).build(tmp_path / "other")
    (v,) = relate.compare(models.open_model(str(other), "o"), [ref]).verdicts
    assert v.relation == "independent"


def test_a_fused_qkv_projection_is_named_so(tmp_path: Path) -> None:
    roles = _roles(_Graph(llama()).build(tmp_path / "m", fused=True))
    assert {"blk.0.attn_qkv.weight", "blk.1.attn_qkv.weight"} <= set(roles.values())
    assert not any("attn_q." in r or "attn_k." in r for r in roles.values())


def test_a_layernorm_gelu_model_with_biases(tmp_path: Path) -> None:
    """LayerNormalization's scale and shift, a two-step feed-forward, a bias after each
    projection (GPT-2's and BERT's shape, pre-norm here)."""
    rng = np.random.default_rng(1)
    state = {k: v for k, v in llama().items() if "gate_proj" not in k}
    for k, v in list(state.items()):
        if "proj" in k or "norm" in k:
            state[k.replace("weight", "bias")] = rng.standard_normal(v.shape[0]).astype(np.float32)
    roles = set(_roles(_Graph(state).build(tmp_path / "m")).values())
    for suffix in ("weight", "bias"):
        assert {f"blk.1.{r}.{suffix}" for r in ("attn_norm", "attn_v", "ffn_norm", "ffn_up",
                                                  "ffn_down")} <= roles  # fmt: skip
    assert "output_norm.bias" in roles and not any("ffn_gate" in r for r in roles)


def test_layers_that_do_not_repeat_one_pattern_name_nothing(tmp_path: Path) -> None:
    """Cross-attention makes two attention blocks per layer: rather than guess which is which
    (and pair unrelated tensors), no projection is named."""
    roles = _roles(_Graph(llama()).build(tmp_path / "m", cross=True))
    assert not any(r.startswith("blk.") for r in roles.values())


def test_onnx_runtime_quantization_of_an_anonymous_export_is_quantized(tmp_path: Path) -> None:
    """ONNX Runtime's dynamic quantization routes the activations' scale around each
    projection (DynamicQuantizeLinear -> Mul): a walk through it must not take a weight's
    scale for a norm, or the last feed-forward for the head's input."""
    import logging

    quantization = pytest.importorskip("onnxruntime.quantization")
    base = llama()
    path = _Graph(base).build(tmp_path / "f32")
    (tmp_path / "q").mkdir()
    logging.disable(logging.WARNING)
    try:
        quantization.quantize_dynamic(
            str(path / "model.onnx"),
            str(tmp_path / "q" / "model.onnx"),
            weight_type=quantization.QuantType.QInt8,
            per_channel=True,
        )
    finally:
        logging.disable(logging.NOTSET)
    roles = _roles(tmp_path / "q")
    matrices = [r for r in roles.values() if r.startswith("blk.") and "norm" not in r]
    assert len(matrices) == 7 * LAYERS and "output.weight" in roles.values()
    assert not any(k.endswith("_scale") for k in roles)
    q = models.open_model(str(tmp_path / "q"), "q")
    (v,) = relate.compare(q, [model(tmp_path / "base", base)]).verdicts
    assert v.relation == "quantized", v.details


@pytest.mark.slow
def test_a_graph_built_to_fan_out_is_walked_in_bounded_time(tmp_path: Path) -> None:
    """20,000 projections whose results meet in one node read by 20,000 others: every walk
    stops after a fixed number of nodes and edges (unbounded, this is 4e8 steps)."""
    import time

    n = 20_000
    nodes = [onnx_format.Node("MatMul", "", ("x", f"w{i}"), (f"y{i}",)) for i in range(n)]
    nodes.append(onnx_format.Node("Sum", "", tuple(f"y{i}" for i in range(n)), ("hub",)))
    nodes += [onnx_format.Node("Mul", "", ("hub", f"s{i}"), (f"z{i}",)) for i in range(n)]
    stored = {f"w{i}": (4, 4) for i in range(n)} | {f"s{i}": (4,) for i in range(n)}
    started = time.perf_counter()
    assert onnx_roles.roles(nodes, stored) == {}
    assert time.perf_counter() - started < 30  # about 1 s here; the unbounded walk: hours


_OPS = ["MatMul", "Gemm", "Add", "Mul", "Softmax", "Transpose", "Sigmoid", "Gather",
        "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ReduceMean", "Split",
        "LayerNormalization", "Attention"]  # fmt: skip
_NAMES = [f"v{i}" for i in range(12)] + [f"w{i}" for i in range(6)]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(_OPS),
            st.lists(st.sampled_from(_NAMES), max_size=4),
            st.lists(st.sampled_from(_NAMES[:12]), min_size=1, max_size=3),
        ),
        max_size=40,
    ),
    st.dictionaries(st.sampled_from(_NAMES), st.lists(st.integers(1, 5), max_size=3)),
)
@settings(max_examples=300, deadline=None)
def test_any_graph_gets_roles_or_none_and_never_an_error(
    spec: list[tuple[str, list[str], list[str]]], shapes: dict[str, list[int]]
) -> None:
    """Cycles, values with two producers, dangling inputs, odd arities: a name or nothing."""
    nodes = [onnx_format.Node(op, "", tuple(i), tuple(o)) for op, i, o in spec]
    roles = onnx_roles.roles(nodes, {k: tuple(v) for k, v in shapes.items()})
    assert set(roles) <= set(shapes) and len(set(roles.values())) == len(roles)
