"""The lineage reader of ONNX models: initializers named and oriented as the module that
exported them, int8 and MatMulNBits weights with their scales (decoded by packed.py).

Exporters rename the weights they rewrite (`val_105`, `onnx::MatMul_19`) but record the module
a node came from; a weight's readers (op, input index, module scope) say what it is. Computed
constants (rotary tables, masks) are left out: they are read by no weight-consuming input.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from gate import paths
from gate.errors import FormatError
from gate.formats import onnx as onnx_format
from gate.lineage import onnx_roles, packed, tensors


def read(file: str) -> tuple[list[tensors.TensorRef], dict[str, Any], list[str]]:
    """An ONNX model's stored tensors, inline or in external data (which must lie in the
    model's folder: the check's PG314 says why one does not), named and oriented as the module
    that exported them (_onnx_view) or, when no module path says, by their place in the graph
    (onnx_roles); 8- and 4-bit weights with their scales (_onnx_quantized, _onnx_nbits); and
    the quantized weights whose layout is not read, as problems."""
    header = onnx_format.read(file)
    by_name = {t.name: t for t in header.tensors}
    taken = set(by_name)  # names a derived name must not collide with (grows as we go)
    # roles from the graph's topology, for weights no module path names (onnx_roles): walked
    # only when some weight is anonymous (a scoped export never pays for it)
    roles: dict[str, str] | None = None

    def topo(name: str) -> str | None:
        nonlocal roles
        if roles is None:
            roles = onnx_roles.roles(header.graph, {t.name: t.shape for t in header.tensors})
        return roles.get(name)

    folder = os.path.dirname(file)
    refs, problems = [], []
    for t in header.tensors:
        uses = header.uses.get(t.name, [])
        nbits = _onnx_nbits(t, uses, by_name)
        if nbits is not None:
            u, shape, scale, zero, bits, size = nbits
            name = u.scope + ".weight" if u.scope else _untaken(topo(t.name), taken) or t.name
            spec = packed.Nbits(
                _onnx_ref(scale, file, folder),
                None if zero is None else _onnx_ref(zero, file, folder),
                bits,
                size,
            )
            ref = _onnx_ref(t, file, folder, name if name not in taken else t.name)
            refs.append(dataclasses.replace(ref, shape=shape, nbits=spec))
            taken.add(refs[-1].name)
            continue
        quant = _onnx_quantized(t, uses, by_name, header)
        if quant is not None:
            consumer, scale, zero, axis, block = quant
            name, transposed = _onnx_view(t, [consumer], taken, weight=True)
            if name == t.name:
                name = _untaken(topo(t.name), taken) or t.name.removesuffix("_quantized")
            affine = packed.Affine(
                _onnx_ref(scale, file, folder), _onnx_zero(zero, file, folder), axis, block
            )
            refs.append(_onnx_ref(t, file, folder, name, transposed, affine))
            taken.add(name)
            continue
        unread = next((u.op for u in uses if _QUANTIZED_INPUTS.get(u.op) == u.index), None)
        if unread is not None:  # a quantized weight in a layout this reader does not know
            problems.append(f"tensor {t.name}: {t.dtype} weight of {unread} not dequantized")
            continue
        name, transposed = _onnx_view(t, uses, taken)
        anonymous = name == t.name and not name.endswith((".weight", ".bias"))
        if anonymous and t.dtype in tensors.FLOAT_DTYPES:  # not shape constants
            name = _untaken(topo(t.name), taken) or name
        weight = any(u.index in _ONNX_WEIGHTS.get(u.op, ()) for u in uses)
        if not name.endswith((".weight", ".bias")) and not weight:
            continue  # a constant the exporter computed (rotary tables, masks): not a weight
        if t.begin is not None or t.external is not None:  # else: varints (shape constants)
            refs.append(_onnx_ref(t, file, folder, name, transposed))
            taken.add(name)
    return refs, {}, problems


def _untaken(name: str | None, taken: set[str]) -> str | None:
    return name if name is not None and name not in taken else None


def _onnx_ref(
    t: onnx_format.OnnxTensor,
    file: str,
    folder: str,
    name: str | None = None,
    transposed: bool = False,
    affine: packed.Affine | None = None,
) -> tensors.TensorRef:
    name = name or t.name
    shape = t.shape[::-1] if transposed else t.shape
    if t.begin is not None and t.end is not None:
        where, offset, length = file, t.begin, t.end - t.begin
    elif t.external is not None:
        real, problem = paths.resolve_inside(folder, t.external.location)
        if problem is not None:
            raise FormatError(f"tensor {t.name}: external data {t.external.location!r}: {problem}")
        wanted = t.nbytes if t.external.length is None else t.external.length
        if wanted is None or t.external.offset + wanted > tensors.file_size(real):
            missing = f"external data {t.external.location!r} is missing or too short"
            raise FormatError(f"tensor {t.name}: {missing}")
        where, offset, length = real, t.external.offset, wanted
    else:
        raise FormatError(f"tensor {t.name}: its values are varints, not stored bytes")
    return tensors.TensorRef(
        name,
        name,
        None,
        shape,
        t.dtype,
        where,
        offset,
        length,
        transposed=transposed,
        affine=affine,
    )


def _onnx_nbits(
    t: onnx_format.OnnxTensor,
    uses: list[onnx_format.Use],
    by_name: dict[str, onnx_format.OnnxTensor],
) -> (
    tuple[
        onnx_format.Use,
        tuple[int, int],
        onnx_format.OnnxTensor,
        onnx_format.OnnxTensor | None,
        int,
        int,
    ]
    | None
):
    """A MatMulNBits weight: (its node, shape [N, K], scales, zero points, bits, block size)."""
    if len(uses) != 1 or uses[0].op != "MatMulNBits" or uses[0].index != 1 or t.dtype != "U8":
        return None
    u = uses[0]
    n, k, bits, size = (u.attr(a) for a in ("N", "K", "bits", "block_size"))
    scale = by_name.get(u.inputs[2]) if len(u.inputs) > 2 else None
    zero = by_name.get(u.inputs[3]) if len(u.inputs) > 3 and u.inputs[3] else None
    if bits not in (4, 8) or n <= 0 or k <= 0 or size < 16 or size & (size - 1):
        return None
    blocks = -(-k // size)
    if (
        scale is None
        or scale.dtype not in ("F32", "F16", "BF16")
        or math.prod(scale.shape) != n * blocks
    ):
        return None
    if t.nbytes != n * blocks * size * bits // 8:
        return None
    if zero is not None and (zero.dtype != "U8" or zero.nbytes != n * -(-blocks * bits // 8)):
        return None
    return u, (n, k), scale, zero, bits, size


def _onnx_zero(
    t: onnx_format.OnnxTensor | None, file: str, folder: str
) -> tensors.TensorRef | tuple[int, ...] | None:
    """A zero point: stored bytes, or (as ONNX Runtime writes small tensors) varints."""
    if t is None:
        return None
    if t.varints is None:
        return _onnx_ref(t, file, folder)
    with paths.open_regular(file) as f:
        fd = f.fileno()
        return tuple(onnx_format.varint_values(t, lambda at, n: os.pread(fd, n, at)))


# The quantized matrix products that take a stored weight with its scale and zero point:
# op -> (weight input, scale input, zero point input); ONNX Runtime's dynamic quantization
# passes no scale to MatMulInteger (-1: found by name, see _onnx_quantized).
_QUANTIZED_PRODUCTS = {
    "MatMulInteger": (1, -1, 3),
    "QLinearMatMul": (3, 4, 5),
    "MatMulIntegerToFloat": (1, 3, 5),  # com.microsoft
}


def _onnx_quantized(
    t: onnx_format.OnnxTensor,
    uses: list[onnx_format.Use],
    by_name: dict[str, onnx_format.OnnxTensor],
    header: onnx_format.OnnxHeader,
) -> (
    tuple[onnx_format.Use, onnx_format.OnnxTensor, onnx_format.OnnxTensor | None, int | None, int]
    | None
):
    """An 8- or 4-bit weight and how to dequantize it: (the node that uses it as a weight,
    scale, zero point, the stored axis its scales run along or None for one scale, block
    size or 0). The layouts: QDQ's DequantizeLinear(q, scale, zero, axis, block_size) before
    MatMul/Gemm/Gather; the quantized products (QLinearMatMul, MatMulInteger, ONNX Runtime's
    MatMulIntegerToFloat), whose weight is B [in, out] with per-output-channel scales; ONNX
    Runtime's dynamic quantization, MatMulInteger with the scale applied after it, and the
    Gather of a quantized embedding table, whose scale is named `<weight>_scale` (ONNX
    Runtime's quantizer convention, onnxruntime/python/tools/quantization)."""
    if t.dtype not in ("I8", "U8", "I4", "U4") or len(uses) != 1 or len(t.shape) != 2:
        return None
    u = uses[0]
    base = t.name.removesuffix("_quantized")
    block = 0

    def given(i: int) -> onnx_format.OnnxTensor | None:
        return by_name.get(u.inputs[i]) if 0 <= i < len(u.inputs) and u.inputs[i] else None

    if u.op == "DequantizeLinear" and u.index == 0:
        scale, zero = given(1), given(2)
        readers = header.uses.get(u.outputs[0], []) if u.outputs else []
        consumer = readers[0] if len(readers) == 1 else dataclasses.replace(u, op="Gather", index=0)
        axis, block = u.axis % 2, max(0, u.attr("block_size"))
    elif u.op in _QUANTIZED_PRODUCTS and u.index == _QUANTIZED_PRODUCTS[u.op][0]:
        _, at_scale, at_zero = _QUANTIZED_PRODUCTS[u.op]
        scale = given(at_scale) if at_scale >= 0 else by_name.get(base + "_scale")
        zero = given(at_zero) or by_name.get(base + "_zero_point")
        consumer = dataclasses.replace(u, op="MatMul", index=1)
        axis = 1
    elif u.op == "Gather" and u.index == 0:
        scale, zero = by_name.get(base + "_scale"), by_name.get(base + "_zero_point")
        consumer, axis = u, 0
    else:
        return None
    if scale is None or scale.dtype not in ("F32", "F16", "BF16") or math.prod(scale.shape) < 1:
        return None
    channels = math.prod(scale.shape)
    if zero is not None and (
        zero.dtype != t.dtype
        or math.prod(zero.shape) not in (1, channels)
        or (zero.varints is not None and t.dtype in ("I4", "U4"))  # packing not defined there
    ):
        return None
    if channels == 1:
        return consumer, scale, zero, None, 0
    if block:  # the scales: the weight's shape with the blocked axis cut into blocks
        want = list(t.shape)
        want[axis] = -(-want[axis] // block)
        return (consumer, scale, zero, axis, block) if list(scale.shape) == want else None
    return (consumer, scale, zero, axis, 0) if channels == t.shape[axis] else None


# where quantized operators take their quantized weight
_QUANTIZED_INPUTS = {"DequantizeLinear": 0, "MatMulNBits": 1} | {
    op: at[0] for op, at in _QUANTIZED_PRODUCTS.items()
}

# which inputs of an op are learned weights (a tensor read only elsewhere is a computed
# constant, a scale or a zero point)
_ONNX_WEIGHTS: dict[str, tuple[int, ...]] = {
    "MatMul": (0, 1),
    "Gemm": (0, 1, 2),
    "Gather": (0,),
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "LayerNormalization": (1, 2),
}


def _onnx_view(
    t: onnx_format.OnnxTensor, uses: list[onnx_format.Use], taken: set[str], weight: bool = False
) -> tuple[str, bool]:
    """The name and orientation of an ONNX initializer as its exporting module had it.

    Exporters name weights they rewrote anonymously (`val_105`, `onnx::MatMul_470`) but record
    the module a node came from (see onnx.Use.scope): a matrix read only as MatMul's right
    operand, or as Gemm's B, is that module's `.weight`, and a vector read only by the Add or
    Gemm after it is its `.bias`. MatMul's right operand is stored [in, out] where torch's
    Linear keeps [out, in] (Gemm with transB, the TorchScript exporter's choice, keeps torch's
    layout), so it is shown transposed. A name that already says what it is (`.weight`,
    `.bias`) is kept; so is one whose derived name another tensor already has."""
    if len(uses) != 1:
        return t.name, False
    u = uses[0]
    matrix = len(t.shape) == 2 and u.index == 1 and u.op in ("MatMul", "Gemm")
    transposed = matrix and (u.op == "MatMul" or not u.trans_b)
    matrix = matrix or (weight and len(t.shape) == 2)
    bias = len(t.shape) == 1 and ((u.op == "Gemm" and u.index == 2) or u.op == "Add")
    suffix = ".weight" if matrix else ".bias" if bias else ""
    name = t.name
    if suffix and u.scope and not t.name.endswith((".weight", ".bias")):
        derived = u.scope + suffix
        name = derived if derived not in taken else t.name
    return name, transposed
