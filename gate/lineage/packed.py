"""Weights stored packed or quantized inside formats the gate reads, decoded for the lineage
tiers: GPTQ and AWQ (GEMM) int32 packings, bitsandbytes NF4/FP4, MLX affine packings (in
safetensors), ONNX QDQ/dynamic int8 and MatMulNBits (via gate/lineage/onnx_reader.py).

Each layout has a frozen spec carried by its TensorRef, a fold that replaces the layout's
tensors by one `<layer>.weight` after validating every shape and index the decoder will use,
and a decoder that reads only the rows asked for. Hand-written rather than importing the
quantizers: their packages need GPU kernels or pull in frameworks; each decoder follows the
layout's published definition and is checked in the tests against the quantizer's own
dequantization where one installs here (bitsandbytes, MLX, ONNX Runtime) or against an
independent writer of the layout (tests/zoo/packings.py: GPTQ, AWQ).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import TYPE_CHECKING, Any

from gate import paths
from gate.lineage import tensors

if TYPE_CHECKING:
    import numpy as np

    from gate.lineage.models import Model
    from gate.lineage.tensors import TensorRef


@dataclasses.dataclass(frozen=True)
class Gptq:
    """The tensors and settings that dequantize one GPTQ- or AWQ-packed linear layer."""

    qzeros: TensorRef  # int32 [groups, out / (32 / bits)], packed along the output dimension
    scales: TensorRef  # float16 [groups, out]
    g_idx: TensorRef | None  # int32 [in]: each input row's group (act-order permutes them)
    bits: int
    group_size: int  # -1: one group
    v1: bool  # AutoGPTQ's original checkpoint format stores each zero point minus one
    awq: bool = False  # AutoAWQ's GEMM layout: qweight [in, out / 8], interleaved channels


@dataclasses.dataclass(frozen=True)
class Bnb4:
    """A bitsandbytes 4-bit weight's quantization state, as transformers serialises it."""

    absmax: TensorRef  # float32 per block, or uint8 codes when nested (double quantization)
    quant_map: TensorRef  # float32 [16]: the NF4 or FP4 code book
    blocksize: int
    nested_absmax: TensorRef | None = None  # float32 per nested block
    nested_quant_map: TensorRef | None = None  # float32 [256]
    nested_blocksize: int = 256
    nested_offset: float = 0.0


@dataclasses.dataclass(frozen=True)
class Mlx:
    """An MLX quantized weight's per-group affine parameters."""

    scales: TensorRef  # [rows, columns / group_size]
    biases: TensorRef
    bits: int
    group_size: int


@dataclasses.dataclass(frozen=True)
class Affine:
    """An ONNX 8- or 4-bit weight as DequantizeLinear (and the quantized MatMuls) define it:
    (q - zero) * scale, per tensor, per channel along one axis of the stored [rows, cols], or
    per block of `block` values along it (opset 21's blocked quantization)."""

    scale: TensorRef
    zero: TensorRef | tuple[int, ...] | None  # stored, or varints as ONNX Runtime writes them
    axis: int | None  # of the stored layout; None: one scale for the tensor
    block: int = 0

    @property
    def label(self) -> str:
        return "blockwise" if self.block else "per-tensor" if self.axis is None else "per-channel"


@dataclasses.dataclass(frozen=True)
class Nbits:
    """ONNX Runtime's MatMulNBits (com.microsoft) quantization of one weight."""

    scales: TensorRef  # [N, blocks] (or flat)
    zeros: TensorRef | None  # uint8 codes packed like the weight, per block; None: 2^(bits-1)
    bits: int
    block_size: int


# AutoAWQ's GEMM packing puts output channel 8w + AWQ_ORDER[i] in slot i of word w; channel
# 8w + k is therefore in slot AWQ_SLOT[k] (awq/utils/packing_utils.py's reverse order).
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
AWQ_SLOT = tuple(AWQ_ORDER.index(k) for k in range(8))


def decode(
    model: Model, t: TensorRef, rows: np.ndarray | None, cols: np.ndarray | None
) -> np.ndarray | None:
    """The tensor (or its rows and columns) as float32 when it is packed; None when not.
    Each decoder returns the rows asked for; the columns are taken here."""
    if t.affine is not None:
        return _affine(model, t, t.affine, rows, cols)  # rows and columns of its stored layout
    if t.gptq is not None:
        out = _gptq(model, t, t.gptq, rows)
    elif t.bnb4 is not None:
        out = _bnb4(model, t, t.bnb4, rows)
    elif t.mlx is not None:
        out = _mlx(model, t, t.mlx, rows)
    elif t.nbits is not None:
        out = _nbits(model, t, t.nbits, rows)
    else:
        return None
    if cols is not None and out.ndim == 2:
        out = out[:, cols]
    model.release(t)
    return model.finite(t, out)


def fold(
    refs: dict[str, TensorRef],
    quant: dict[str, int],
    folder: str,
    config: dict[str, Any],
    problems: list[str],
) -> None:
    """Fold every packed layout of a safetensors model into one tensor per layer; quant
    counts the bytes of each quantization kind, problems says what could not be read."""
    _fold_gptq(refs, quant, _gptq_config(folder, config), problems)
    _fold_bnb4(refs, quant, problems)
    _fold_mlx(refs, quant, config.get("quantization"), problems)


def _affine(
    model: Model, t: TensorRef, a: Affine, rows: np.ndarray | None, cols: np.ndarray | None
) -> np.ndarray:
    """An ONNX quantized weight (see Affine), the rows and columns asked for taken from the
    stored layout before anything is scaled (a MatMul weight's shown rows are its columns)."""
    import numpy as np

    stored = t.shape[::-1] if t.transposed else t.shape
    picks = (cols, rows) if t.transposed else (rows, cols)
    q = _levels(model, t, stored)
    for axis, pick in enumerate(picks):
        q = q if pick is None else np.take(q, pick, axis=axis)
    scale = _grid(model.array(a.scale).reshape(-1), stored, a, picks)
    if a.zero is None:
        zero = np.zeros((1, 1), np.float32)
    elif isinstance(a.zero, tuple):
        zero = _grid(np.array(a.zero, np.float32), stored, a, picks)
    else:
        levels = _levels(model, a.zero, a.zero.shape).reshape(-1).astype(np.float32)
        zero = _grid(levels, stored, a, picks)
    out = ((q.astype(np.float32) - zero) * scale).astype(np.float32)
    model.release(t)
    return model.finite(t, np.ascontiguousarray(out.T) if t.transposed else out)


def _levels(model: Model, t: TensorRef, shape: tuple[int, ...]) -> np.ndarray:
    """A quantized tensor's integer levels in the shape given: 8-bit values as stored, 4-bit
    ones (ONNX INT4/UINT4) unpacked, the first of each byte's pair in its low nibble."""
    import numpy as np

    count = math.prod(shape)
    if t.dtype not in ("I4", "U4"):
        m = model.mapped(t.file)
        return np.frombuffer(m, tensors.stored_dtype(t.dtype), count, t.offset).reshape(shape)
    raw = np.frombuffer(model.mapped(t.file), np.uint8, (count + 1) // 2, t.offset)
    out = np.empty(raw.size * 2, np.uint8)
    out[0::2], out[1::2] = raw & 0x0F, raw >> 4
    if t.dtype == "I4":  # sign-extend: the nibble into the high bits, arithmetic shift back
        return ((out[:count] << 4).view(np.int8) >> 4).reshape(shape)
    return out[:count].reshape(shape)


def _grid(
    values: np.ndarray,
    stored: tuple[int, ...],
    a: Affine,
    picks: tuple[np.ndarray | None, np.ndarray | None],
) -> np.ndarray:
    """Per-tensor, per-channel or per-block parameters as an array that broadcasts against
    the stored rows and columns picked."""
    import numpy as np

    if values.size == 1 or a.axis is None:
        return values[:1].reshape(1, 1)
    if a.block:
        shape = list(stored)
        shape[a.axis] = -(-stored[a.axis] // a.block)
    else:
        shape = [1, 1]
        shape[a.axis] = stored[a.axis]
    grid = values.reshape(shape)
    for axis, pick in enumerate(picks):
        if grid.shape[axis] == 1:
            continue
        where = np.arange(stored[axis]) if pick is None else pick
        grid = np.take(grid, where // a.block if a.block and axis == a.axis else where, axis=axis)
    return grid


def _gptq(model: Model, t: TensorRef, g: Gptq, rows: np.ndarray | None) -> np.ndarray:
    """A GPTQ or AWQ linear weight. GPTQ (AutoGPTQ/GPTQModel): qweight int32 [in / per,
    out] holds `per` = 32 / bits values of consecutive input rows, lowest bits first; zero
    points are packed the same way along the output dimension. AWQ (AutoAWQ GEMM): qweight
    [in, out / 8] packs output channels, interleaved (AWQ_ORDER), zero points alike. Then
    w[i, o] = scales[g, o] * (q[i, o] - zero[g, o]), g = g_idx[i] (GPTQ) or i // group.
    Shown as torch's [out, in]: rows asked for are output channels."""
    import numpy as np

    per = 32 // g.bits
    mask = (1 << g.bits) - 1
    out_f, in_f = t.shape
    packed = np.frombuffer(model.mapped(t.file), np.uint32, t.nbytes // 4, t.offset)
    chans = np.arange(out_f) if rows is None else np.asarray(rows)
    # where each output channel sits in a word packed along the outputs (AWQ's weights, both
    # layouts' zero points): word chans // per, at a shift AWQ interleaves
    words = chans // per
    slots = np.asarray(AWQ_SLOT if g.awq else range(per), np.uint32)[chans % per] * g.bits
    if g.awq:  # [in, out / 8]
        packed = packed.reshape(in_f, out_f // per)
        q = (packed[:, words] >> slots[None, :]) & mask
    else:  # GPTQ: [in / per, out], consecutive input rows in one word
        packed = packed.reshape(in_f // per, out_f)
        shifts = (np.arange(per, dtype=np.uint32) * g.bits)[None, :, None]
        q = ((packed[:, chans][:, None, :] >> shifts) & mask).reshape(in_f, len(chans))
    groups = model.stored(g.g_idx).astype(np.int64) if g.g_idx is not None else None
    if groups is None:
        size = in_f if g.group_size <= 0 else g.group_size
        groups = np.arange(in_f) // size
    zp = np.frombuffer(
        model.mapped(g.qzeros.file), np.uint32, g.qzeros.nbytes // 4, g.qzeros.offset
    )
    zp = zp.reshape(g.qzeros.shape)
    zeros = ((zp[:, words] >> slots[None, :]) & mask).astype(np.float32) + (1 if g.v1 else 0)
    scales = tensors.to_float32(model.stored(g.scales)[:, chans], g.scales.dtype)
    w = (q.astype(np.float32) - zeros[groups]) * scales[groups]  # [in, chans]
    out = np.ascontiguousarray(w.T)
    return out


def _bnb4(model: Model, t: TensorRef, b: Bnb4, rows: np.ndarray | None) -> np.ndarray:
    """A bitsandbytes 4-bit weight, as its dequantize_4bit defines it: element k of the
    row-major matrix is the code in the high nibble of byte k / 2 when k is even, the low
    one when odd; value = quant_map[code] * absmax[k // blocksize]. With nested (double)
    quantization absmax itself is uint8 codes: nested_quant_map[code] *
    nested_absmax[block // nested_blocksize] + nested_offset."""
    import numpy as np

    n_rows = t.shape[0] if len(t.shape) >= 2 else 1
    width = t.size // n_rows
    picked = np.arange(n_rows) if rows is None else np.asarray(rows, dtype=np.int64)
    packed = np.frombuffer(model.mapped(t.file), np.uint8, t.nbytes, t.offset)
    if b.nested_absmax is None or b.nested_quant_map is None:
        absmax = model.array(b.absmax).reshape(-1)
    else:  # every block's absmax at once: 1/blocksize of the elements
        coded = model.stored(b.absmax).reshape(-1)
        nested = model.array(b.nested_absmax).reshape(-1)
        index = np.arange(coded.size) // b.nested_blocksize
        absmax = model.array(b.nested_quant_map)[coded] * nested[index]
        absmax = (absmax + np.float32(b.nested_offset)).astype(np.float32)
    code_book = model.array(b.quant_map)
    out = np.empty((len(picked), width), np.float32)
    # rows a few MiB at a time: the element indices are int64, 16x the packed bytes
    step = max(1, tensors.DECODE_BYTES // (8 * max(1, width)))
    for start in range(0, len(picked), step):
        part = picked[start : start + step]
        k = (part[:, None] * width + np.arange(width)[None, :]).reshape(-1)
        byte = packed[k // 2]
        codes = np.where(k % 2 == 0, byte >> 4, byte & 0x0F)
        values = code_book[codes] * absmax[k // b.blocksize]
        out[start : start + step] = values.reshape(len(part), width)
    return out.reshape(t.shape) if len(t.shape) < 2 else out


def _mlx(model: Model, t: TensorRef, q: Mlx, rows: np.ndarray | None) -> np.ndarray:
    """An MLX quantized matrix, as mlx.core.dequantize defines it: each row's values
    packed 32 / bits to a uint32, lowest bits first; value = scale * q + bias per group of
    group_size consecutive columns."""
    import numpy as np

    per = 32 // q.bits
    n_rows, width = t.shape
    words = np.frombuffer(model.mapped(t.file), np.uint32, t.nbytes // 4, t.offset)
    words = words.reshape(n_rows, width // per)
    if rows is not None:
        words = words[rows]
    shifts = np.arange(per, dtype=np.uint32) * q.bits
    codes = ((words[:, :, None] >> shifts) & ((1 << q.bits) - 1)).reshape(len(words), width)
    scales, biases = model.stored(q.scales), model.stored(q.biases)
    if rows is not None:
        scales, biases = scales[rows], biases[rows]
    group = np.arange(width) // q.group_size
    scale = tensors.to_float32(np.ascontiguousarray(scales), q.scales.dtype)[:, group]
    bias = tensors.to_float32(np.ascontiguousarray(biases), q.biases.dtype)[:, group]
    out: np.ndarray = (codes.astype(np.float32) * scale + bias).astype(np.float32)
    return out


def _nbits(model: Model, t: TensorRef, q: Nbits, rows: np.ndarray | None) -> np.ndarray:
    """A MatMulNBits weight, as ONNX Runtime's contrib operator defines it: B is [N,
    blocks, block_size * bits / 8] bytes of codes along K, lowest bits first; zero points
    (default 2^(bits-1)) are packed the same way per row; w[n, k] = (code - zero) *
    scale, per block of block_size. Shown as [N, K]: torch's [out, in]."""
    import numpy as np

    n_out, k_in = t.shape
    blocks = -(-k_in // q.block_size)
    raw = np.frombuffer(model.mapped(t.file), np.uint8, t.nbytes, t.offset).reshape(n_out, -1)
    picked = np.arange(n_out) if rows is None else np.asarray(rows)
    codes = _unpack_low_first(raw[picked], q.bits)[:, :k_in]
    scales = tensors.to_float32(np.ascontiguousarray(model.stored(q.scales)), q.scales.dtype)
    scales = scales.reshape(n_out, blocks)[picked]
    if q.zeros is None:
        zeros = np.full((len(picked), blocks), 1 << (q.bits - 1), np.float32)
    else:
        zraw = model.stored(q.zeros).reshape(n_out, -1)[picked]
        zeros = _unpack_low_first(zraw, q.bits)[:, :blocks].astype(np.float32)
    block = np.arange(k_in) // q.block_size
    out: np.ndarray = (codes.astype(np.float32) - zeros[:, block]) * scales[:, block]
    return out.astype(np.float32)


def _unpack_low_first(raw: np.ndarray, bits: int) -> np.ndarray:
    """Codes of `bits` (4 or 8) packed in bytes, lowest bits first, along the last axis."""
    import numpy as np

    if bits == 8:
        return raw
    return np.stack([raw & 0x0F, raw >> 4], axis=-1).reshape(*raw.shape[:-1], -1)


def _indices_below(t: TensorRef, limit: int) -> bool:
    """Whether every value of a small integer tensor (g_idx) lies in [0, limit)."""
    import numpy as np

    with paths.open_regular(t.file) as f:
        data = os.pread(f.fileno(), t.nbytes, t.offset)
    values = np.frombuffer(data, dtype=tensors.stored_dtype(t.dtype), count=t.size)
    return bool(values.size == 0 or (values.min() >= 0 and values.max() < limit))


def _gptq_config(folder: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The GPTQ or AWQ (GEMM) settings of a checkpoint: config.json's quantization_config
    (transformers, Optimum, GPTQModel, AutoAWQ) or quantize_config.json (AutoGPTQ)."""
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        qc = tensors.read_json(os.path.join(folder, "quantize_config.json"))
    if not isinstance(qc, dict):
        return None
    method = str(qc.get("quant_method", "gptq")).lower()
    version = str(qc.get("version", "gemm")).lower()
    return qc if method == "gptq" or (method == "awq" and version == "gemm") else None


def _fold_gptq(
    refs: dict[str, TensorRef],
    quant: dict[str, int],
    qc: dict[str, Any] | None,
    problems: list[str],
) -> None:
    """Fold each GPTQ or AWQ layer's qweight, qzeros, scales (and GPTQ's g_idx) into one
    `<layer>.weight`."""
    for name, t in list(refs.items()):
        if not name.endswith(".qweight") or t.dtype != "I32" or len(t.shape) != 2:
            continue
        prefix = name[: -len("qweight")]
        qzeros, scales = refs.get(prefix + "qzeros"), refs.get(prefix + "scales")
        g_idx = refs.get(prefix + "g_idx")
        if qzeros is None or scales is None:
            continue
        awq = qc is not None and str(qc.get("quant_method")).lower() == "awq"
        bits = int(qc.get("bits", qc.get("w_bit", 4))) if qc else 4
        if qc is None or bits not in ((4,) if awq else (2, 4, 8)):
            why = "no GPTQ/AWQ quantization config" if qc is None else f"{bits}-bit packing"
            problems.append(f"{prefix}qweight: packed weights not read ({why})")
            continue
        per = 32 // bits
        in_f, out_f = (t.shape[0], t.shape[1] * per) if awq else (t.shape[0] * per, t.shape[1])
        groups = scales.shape[0]
        consistent = (
            scales.shape == (groups, out_f)
            and scales.dtype in ("F16", "BF16", "F32")
            and qzeros.dtype == "I32"
            and qzeros.shape == (groups, -(-out_f // per))
            and (g_idx is None or (g_idx.dtype == "I32" and g_idx.shape == (in_f,)))
        )
        if consistent and g_idx is not None and not awq:
            consistent = _indices_below(g_idx, groups)
        if not consistent:
            problems.append(f"{prefix}qweight: GPTQ tensors of inconsistent shapes; not read")
            continue
        v1 = not awq and str(qc.get("checkpoint_format", "gptq")).lower() != "gptq_v2"
        size = int(qc.get("group_size", qc.get("q_group_size", -1)))
        spec = Gptq(qzeros, scales, None if awq else g_idx, bits, size, v1, awq)
        weight = prefix + "weight"
        refs[weight] = dataclasses.replace(
            t, name=weight, role=weight, shape=(out_f, in_f), gptq=spec
        )
        for part in ("qweight", "qzeros", "scales", "g_idx"):
            if prefix + part != weight:
                refs.pop(prefix + part, None)
        label = f"{'AWQ' if awq else 'GPTQ'} {bits}-bit"
        quant[label] = quant.get(label, 0) + t.nbytes


def _fold_mlx(
    refs: dict[str, TensorRef], quant: dict[str, int], qc: Any, problems: list[str]
) -> None:
    """Fold each MLX quantized weight (uint32 `.weight` with `.scales` and `.biases`, as
    mlx-lm saves them; config.json's `quantization` gives bits and group size)."""
    if not isinstance(qc, dict):
        return
    bits, size = qc.get("bits"), qc.get("group_size")
    for name, t in list(refs.items()):
        prefix = name.removesuffix("weight")
        scales, biases = refs.get(prefix + "scales"), refs.get(prefix + "biases")
        if not name.endswith(".weight") or t.dtype != "U32" or scales is None or biases is None:
            continue
        if bits not in (2, 4, 8) or not isinstance(size, int) or size <= 0 or len(t.shape) != 2:
            problems.append(f"{name}: MLX {bits}-bit weights not read (bits 2, 4 or 8 only)")
            continue
        width = t.shape[1] * (32 // bits)
        groups = (t.shape[0], width // size)
        if width % size or scales.shape != groups or biases.shape != groups:
            problems.append(f"{name}: MLX scales and biases do not match the weight; not read")
            continue
        refs[name] = dataclasses.replace(
            t, shape=(t.shape[0], width), mlx=Mlx(scales, biases, bits, size)
        )
        del refs[prefix + "scales"], refs[prefix + "biases"]
        label = f"MLX {bits}-bit"
        quant[label] = quant.get(label, 0) + t.nbytes


BNB_STATE = ".quant_state.bitsandbytes__"
MAX_BNB_STATE = 1 << 16  # the JSON of one layer's quantization state is ~200 bytes


def _fold_bnb4(refs: dict[str, TensorRef], quant: dict[str, int], problems: list[str]) -> None:
    """Fold each bitsandbytes 4-bit weight and its serialised quant state (absmax, quant_map,
    nested statistics, and the JSON `quant_state.bitsandbytes__nf4|fp4`) into one tensor."""
    for name, state in list(refs.items()):
        if BNB_STATE not in name or state.dtype != "U8" or len(state.shape) != 1:
            continue
        weight = name[: name.index(BNB_STATE)]
        t = refs.get(weight)
        parts = {
            p: refs.get(f"{weight}.{p}")
            for p in ("absmax", "quant_map", "nested_absmax", "nested_quant_map")
        }
        try:
            if (
                t is None
                or t.dtype != "U8"
                or parts["absmax"] is None
                or parts["quant_map"] is None
            ):
                raise ValueError("tensors missing")
            if state.nbytes > MAX_BNB_STATE:
                raise ValueError("quant state over 64 KiB")
            with paths.open_regular(state.file) as f:
                info = json.loads(os.pread(f.fileno(), state.nbytes, state.offset))
            shape = tuple(int(x) for x in info["shape"])
            blocksize = int(info["blocksize"])
            kind = str(info["quant_type"]).upper()
            nested_absmax = parts["nested_absmax"]
            nested = nested_absmax is not None
            if (
                kind not in ("NF4", "FP4")
                or blocksize <= 0
                or -(-math.prod(shape) // 2) != t.nbytes
            ):
                raise ValueError(f"{kind}, blocksize {blocksize}, shape {list(shape)}")
            blocks = -(-math.prod(shape) // blocksize)
            if parts["absmax"].size != blocks or parts["quant_map"].size != 16:
                raise ValueError("absmax or quant_map of the wrong size")
            nested_size = int(info.get("nested_blocksize", 256)) if nested else 256
            if nested and (
                parts["nested_quant_map"] is None
                or parts["nested_quant_map"].size != 256
                or nested_size <= 0
                or nested_absmax is None
                or nested_absmax.size != -(-blocks // nested_size)
            ):
                raise ValueError("nested statistics of the wrong size")
            spec = Bnb4(
                parts["absmax"],
                parts["quant_map"],
                blocksize,
                parts["nested_absmax"],
                parts["nested_quant_map"],
                nested_size,
                float(info.get("nested_offset", 0.0)) if nested else 0.0,
            )
        except (ValueError, KeyError, TypeError, OSError) as e:
            problems.append(f"{weight}: bitsandbytes 4-bit weight not read ({e})")
            continue
        refs[weight] = dataclasses.replace(t, shape=shape, bnb4=spec)
        for key in list(refs):
            if key.startswith(weight + ".") and key != weight:
                del refs[key]
        label = f"bitsandbytes {kind}"
        quant[label] = quant.get(label, 0) + t.nbytes
