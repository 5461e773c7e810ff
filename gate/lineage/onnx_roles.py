"""Roles of anonymous ONNX weights, from the graph's topology.

An export that kept no module path (node names stripped by an optimiser, metadata dropped by a
quantizer, a hand-built graph) leaves weights named `val_105` or `onnx::MatMul_470`, and the
lineage tiers, which pair tensors by role and layer, cannot line it up with its source. What
the weights do is still in the graph:

- a *projection* is a MatMul/Gemm (or its quantized forms) whose right operand is stored;
- an attention block multiplies two activations (Q Kᵀ, whose product goes to a Softmax, then
  that with V), or hands Q, K, V to an attention operator: the projection whose values reach
  the scores as the left operand is Q, as the right one K, the one that reaches the second
  product is V, one reaching both sides is a fused QKV, and the projection fed by the
  attention's result is the output projection;
- each attention block opens a layer, in the graph's (topological) order; the projections
  after the output projection are the feed-forward: two fed by one input, one of them through
  an activation (gate) and the other straight into the product (up), then down; or up, down;
- a 1-D weight whose normalised output feeds only one group of projections is that group's
  pre-norm; a Gather of a graph input is the token embedding; one projection left after the
  last layer is the output head.

Only what fits these patterns is named, and a graph whose layers do not repeat one pattern (an
encoder-decoder's cross-attention, experts) names nothing: a weight left anonymous is left out
of the comparison, which the verdict reports, while a wrong role would pair unrelated tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gate.formats.onnx import Node

# The operators that multiply by a stored matrix, and which input holds it.
_PROJECTIONS = {
    "MatMul": 1,
    "Gemm": 1,
    "MatMulInteger": 1,
    "MatMulNBits": 1,
    "QLinearMatMul": 3,
    "DynamicQuantizeMatMul": 1,
}
# Attention operators taking Q, K, V as inputs 0, 1, 2 (ONNX 23's and ONNX Runtime's).
_ATTENTION = {
    ("", "Attention"),
    ("com.microsoft", "MultiHeadAttention"),
    ("com.microsoft", "GroupQueryAttention"),
}
_NORMS = {
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "RMSNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
}
# What a gated unit's gate passes through before the product with its up projection.
_ACTIVATIONS = {
    "Sigmoid",
    "Tanh",
    "Erf",
    "Gelu",
    "FastGelu",
    "QuickGelu",
    "BiasGelu",
    "Relu",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Softplus",
    "HardSigmoid",
    "HardSwish",
    "Mish",
}
_VISITS = 96  # nodes a walk from one value visits before it gives up (bounds the time)
_STEPS = 1024  # edges it looks at
_FFN = {"gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}
_ATTN = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "qkv": "attn_qkv", "o": "attn_output"}


class _Graph:
    def __init__(self, nodes: Sequence[Node], stored: Mapping[str, tuple[int, ...]]) -> None:
        self.nodes = nodes
        self.stored = stored
        self.producer = {o: i for i, n in enumerate(nodes) for o in n.outputs if o}
        self.readers: dict[str, list[tuple[int, int]]] = {}
        for i, n in enumerate(nodes):
            for j, x in enumerate(n.inputs):
                if x:
                    self.readers.setdefault(x, []).append((i, j))
        # projection node -> its stored weight (a DequantizeLinear's stored input counts)
        self.weight: dict[int, str] = {}
        for i, n in enumerate(nodes):
            at = _PROJECTIONS.get(n.op)
            if at is not None and at < len(n.inputs):
                w = self._stored(n.inputs[at])
                if w is not None and len(stored[w]) >= 1:
                    self.weight[i] = w
        self.products = {
            i
            for i, n in enumerate(nodes)
            if n.op == "MatMul" and i not in self.weight and len(n.inputs) == 2
        }
        self.attention = {i for i, n in enumerate(nodes) if (n.domain, n.op) in _ATTENTION}
        self.stops = self.weight.keys() | self.products | self.attention  # where walks end
        self.scores = {i for i in self.products if "Softmax" in self._ops_after(i)}
        self.context = self.products - self.scores  # the attention's second product
        self._walks: dict[int, tuple[list[tuple[int, int]], set[str]]] = {}

    def _stored(self, value: str) -> str | None:
        if value in self.stored:
            return value
        p = self.producer.get(value)
        if p is not None and self.nodes[p].op == "DequantizeLinear":
            x = self.nodes[p].inputs[0] if self.nodes[p].inputs else ""
            return x if x in self.stored else None
        return None

    def _ops_after(self, i: int) -> set[str]:
        """The ops a few steps downstream of node i, not past another product."""
        seen, out, frontier, steps = {i}, set(), [i], _STEPS
        for _ in range(4):
            nxt = []
            for k in frontier:
                for o in self.nodes[k].outputs:
                    for r, _j in self.readers.get(o, ())[:steps]:
                        steps -= 1
                        if r not in seen and r not in self.stops:
                            seen.add(r)
                            out.add(self.nodes[r].op)
                            nxt.append(r)
            frontier = nxt
        return out

    def reached(self, start: int) -> list[tuple[int, int]]:
        """(node, input) of the projections, products and attention operators that node
        start's values reach, walking forward through everything else."""
        return self._walk(start)[0]

    def activated(self, start: int) -> bool:
        """Whether node start's values pass through an activation function on that walk."""
        return not self._walk(start)[1].isdisjoint(_ACTIVATIONS)

    def _walk(self, start: int) -> tuple[list[tuple[int, int]], set[str]]:
        """Bounded: at most _VISITS nodes entered and _STEPS edges looked at, however the
        graph fans out (a value read by a million nodes costs no more than one read by two)."""
        if start in self._walks:
            return self._walks[start]
        hits: dict[tuple[int, int], None] = {}  # insertion-ordered, as found
        seen, ops, frontier, steps = {start}, set(), [start], _STEPS
        while frontier and len(seen) < _VISITS and steps > 0:
            k = frontier.pop(0)
            node = self.nodes[k]
            # a dynamic quantizer's scale and zero point go to every projection it feeds, and
            # around them: only its values are followed
            outputs = node.outputs[:1] if node.op == "DynamicQuantizeLinear" else node.outputs
            for o in outputs:
                for r, j in self.readers.get(o, ())[:steps]:
                    steps -= 1
                    if r in self.stops:
                        hits[(r, j)] = None
                    elif r not in seen:
                        seen.add(r)
                        ops.add(self.nodes[r].op)
                        frontier.append(r)
        self._walks[start] = list(hits), ops
        return self._walks[start]

    def one_reader(self, value: str) -> bool:
        return len(self.readers.get(value, ())) == 1


def roles(nodes: Sequence[Node], stored: Mapping[str, tuple[int, ...]]) -> dict[str, str]:
    """Stored tensor name -> the name llama.cpp gives its role (`blk.0.attn_q.weight`), for
    the weights whose role the graph shows; see the module's docstring."""
    g = _Graph(nodes, stored)
    kinds = {i: _attention_kind(g, i) for i in g.weight}
    for s in g.context | g.attention:  # the attention's result: output projection
        for r, _j in g.reached(s):
            if r in g.weight and kinds[r] is None:
                kinds[r] = "o"
    layers = _layers(g, kinds)
    if layers is None:
        return {}
    out: dict[str, str] = {}
    for n, (attn, ffn) in enumerate(layers):
        for i, kind in attn + ffn:
            _name(g, out, i, f"blk.{n}.{_ATTN.get(kind) or _FFN[kind]}")
    tail = layers[-1][1][-1][0]
    head = [i for i in sorted(g.weight) if i > tail]
    if len(head) == 1 and len(set(stored[g.weight[head[0]]])) == 2:
        _name(g, out, head[0], "output")  # not square: a pooler's dense layer is no LM head
    else:
        head = []
    _norms(g, out, layers, head)
    _embedding(g, out)
    return out


def _attention_kind(g: _Graph, i: int) -> str | None:
    hits = g.reached(i)
    sides = {j for r, j in hits if r in g.scores}
    sides |= {2 for r, j in hits if (r in g.context and j == 1)}
    sides |= {j for r, j in hits if r in g.attention and j <= 2}
    if len(sides) > 1:
        return "qkv"
    return {0: "q", 1: "k", 2: "v"}.get(next(iter(sides), -1))


Layer = tuple[list[tuple[int, str]], list[tuple[int, str]]]  # (attention, feed-forward)


def _layers(g: _Graph, kinds: Mapping[int, str | None]) -> list[Layer] | None:
    """The projections cut into layers, each (its attention's, its feed-forward's), or None
    when the layers do not all follow one pattern."""
    order = sorted(g.weight)
    blocks: list[tuple[list[int], list[int]]] = []
    for i in order:
        kind = kinds[i]
        if kind in ("q", "k", "v", "qkv"):
            if not blocks or blocks[-1][1] or any(kinds[x] == "o" for x in blocks[-1][0]):
                blocks.append(([], []))
            blocks[-1][0].append(i)
        elif blocks:
            (blocks[-1][0] if kind == "o" and not blocks[-1][1] else blocks[-1][1]).append(i)
    if not blocks:
        return None
    layers: list[Layer] = []
    shape: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    for n, (attn, rest) in enumerate(blocks):
        a = [(i, str(kinds[i])) for i in attn]
        if sorted(k for _, k in a) not in (["k", "o", "q", "v"], ["o", "qkv"]):
            return None
        ffn = _feed_forward(g, rest)
        if ffn is None:
            return None
        if n < len(blocks) - 1 and len(ffn) != len(rest):
            return None  # projections nobody can name inside a layer: experts, cross-attention
        this = (tuple(sorted(k for _, k in a)), tuple(k for _, k in ffn))
        if shape is not None and this != shape:
            return None
        shape = this
        layers.append((a, ffn))
    return layers


def _feed_forward(g: _Graph, rest: list[int]) -> list[tuple[int, str]] | None:
    """The feed-forward at the front of `rest`: gate, up, down (a gated unit) or up, down."""
    feeds = {i: {r for r, _ in g.reached(i) if r in g.weight} for i in rest}
    if len(rest) >= 3 and feeds[rest[0]] == feeds[rest[1]] == {rest[2]}:
        a, b = rest[0], rest[1]
        if _same_input(g, a, b):
            gate = [x for x in (a, b) if g.activated(x)]
            if len(gate) == 1:
                return [(gate[0], "gate"), (b if gate[0] == a else a, "up"), (rest[2], "down")]
        return None
    if len(rest) >= 2 and feeds[rest[0]] == {rest[1]}:
        return [(rest[0], "up"), (rest[1], "down")]
    return None


def _same_input(g: _Graph, a: int, b: int) -> bool:
    return bool(g.nodes[a].inputs and g.nodes[a].inputs[0] == g.nodes[b].inputs[0])


def _name(g: _Graph, out: dict[str, str], i: int, role: str) -> None:
    w = g.weight[i]
    if g.one_reader(w):  # a weight read twice (tied) has no one role
        out[w] = role + ".weight"
    n = g.nodes[i]
    if n.op == "Gemm" and len(n.inputs) > 2 and n.inputs[2] in g.stored:
        out[n.inputs[2]] = role + ".bias"
        return
    for o in n.outputs:
        for r, _j in g.readers.get(o, ()):
            if g.nodes[r].op == "Add":
                b = [x for x in g.nodes[r].inputs if x in g.stored and len(g.stored[x]) == 1]
                if len(b) == 1 and g.one_reader(b[0]):
                    out[b[0]] = role + ".bias"


def _norms(g: _Graph, out: dict[str, str], layers: list[Layer], head: list[int]) -> None:
    """Pre-norms: a 1-D weight whose normalised values reach exactly one group of
    projections (an attention's inputs, a feed-forward's first step, the head)."""
    groups: dict[frozenset[int], str] = {}  # the projections a norm feeds -> its name
    for layer, (attn, ffn) in enumerate(layers):
        groups[frozenset(i for i, k in attn if k != "o")] = f"blk.{layer}.attn_norm"
        groups[frozenset(i for i, k in ffn if k in ("gate", "up"))] = f"blk.{layer}.ffn_norm"
    if head:
        groups[frozenset(head[:1])] = "output_norm"
    groups.pop(frozenset(), None)
    for i, node in enumerate(g.nodes):
        # the scale (and shift) of a LayerNormalization-like operator, or of the Mul after a
        # decomposed norm; a Skip* norm's output also carries the residual sum, so its walk
        # never matches one group and its weights stay anonymous
        if node.op not in _NORMS and node.op != "Mul":
            continue
        candidates = node.inputs[1:2] if node.op in _NORMS else node.inputs[:2]
        scale = [x for x in candidates if x in g.stored and len(g.stored[x]) == 1]
        if len(scale) != 1 or not g.one_reader(scale[0]):
            continue
        if node.op == "Mul" and not _normalised(g, [x for x in node.inputs if x != scale[0]]):
            continue  # a scale applied to something else (a quantized projection's result)
        role = groups.get(frozenset(r for r, _ in g.reached(i)))
        if role is not None:
            out[scale[0]] = role + ".weight"
            bias = node.inputs[2] if node.op in _NORMS and len(node.inputs) > 2 else ""
            if bias in g.stored and g.one_reader(bias):
                out[bias] = role + ".bias"


def _normalised(g: _Graph, values: list[str]) -> bool:
    """Whether these values were just divided by their norm: a mean of squares a few steps
    back (RMSNorm and LayerNorm as exporters decompose them), not past a projection."""
    frontier = [g.producer[v] for v in values if v in g.producer]
    seen, steps = set(frontier), _STEPS
    for _ in range(5):  # x * 1/sqrt(mean(x^2) + eps): the mean is 4 steps back
        step = []
        for k in frontier:
            node = g.nodes[k]
            if node.op in ("ReduceMean", "ReduceL2", "ReduceSumSquare") or node.op in _NORMS:
                return True
            if k in g.stops or node.op == "DynamicQuantizeLinear":
                continue
            for x in node.inputs[:steps]:
                steps -= 1
                p = g.producer.get(x)
                if p is not None and p not in seen and len(seen) < _VISITS:
                    seen.add(p)
                    step.append(p)
        frontier = step
    return False


def _embedding(g: _Graph, out: dict[str, str]) -> None:
    """The one Gather of a stored matrix by a graph input (the token ids)."""
    gathers = [
        n.inputs[0]
        for n in g.nodes
        if n.op == "Gather"
        and len(n.inputs) == 2
        and len(g.stored.get(n.inputs[0], ())) == 2
        and n.inputs[1] not in g.producer
        and n.inputs[1] not in g.stored
    ]
    if len(gathers) == 1 and gathers[0] not in out:
        out[gathers[0]] = "token_embd.weight"
