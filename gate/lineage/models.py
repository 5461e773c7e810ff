"""A model as the lineage tiers see it: tensors by canonical role, config, vocabulary, adapter.

Weights are memory-mapped and decoded one tensor at a time (bf16 by a shift, fp8 through
ml_dtypes, GGUF quantizations through the gguf package), so memory stays at a small multiple of
the largest tensor. Headers are read with the gate's own bounded parsers, never with a library
that trusts the file. Pickle checkpoints are not read here (they are never unpickled; see
formats/pickles).
"""

from __future__ import annotations

import dataclasses
import json
import math
import mmap
import os
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from gate import lfs, paths
from gate.errors import FormatError
from gate.formats import gguf as gguf_format
from gate.formats import onnx as onnx_format
from gate.formats import registry, sniff

if TYPE_CHECKING:
    import numpy as np

DECODE_BYTES = 4 << 20  # file bytes of a whole matrix decoded (and released) at a time
MAX_JSON_BYTES = 64 << 20  # config.json / tokenizer.json / adapter_config.json
MAX_FILES = 4096
_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")
_GENERIC_LAYER = re.compile(r"^(.*?\.)(\d+)(\..+)$")
# LLM.int8() checkpoints (bitsandbytes, as transformers saves them): `X.weight` int8 rows with
# `X.SCB`, each row's absolute maximum; a weight is int8 * SCB / 127 (Dettmers et al. 2022).
INT8_ROWWISE = "INT8_ROWWISE"
FLOAT_DTYPES = frozenset(
    {"F16", "BF16", "F32", "F64", "F8_E5M2", "F8_E4M3", INT8_ROWWISE}
    | {name for name, block, _ in gguf_format.GGML_TYPES.values() if block > 1}
)


class ModelError(FormatError):
    """A model folder or file that cannot be read as a model at all."""


@dataclasses.dataclass(frozen=True)
class TensorRef:
    """Where one tensor lives and what it is."""

    name: str  # as stored
    role: str  # canonical, layer index replaced by '*': 'blk.*.attn_q.weight'
    layer: int | None
    shape: tuple[int, ...]  # numpy order (rows first)
    dtype: str  # safetensors dtype or ggml type name
    file: str
    offset: int  # absolute offset in the file
    nbytes: int
    scale: TensorRef | None = None  # INT8_ROWWISE: the per-row absolute maxima
    full_shape: tuple[int, ...] | None = None  # set when only sampled rows are present
    transposed: bool = False  # a matrix stored [in, out] (ONNX MatMul), shown as torch's [out, in]
    # ONNX int8/uint8 weights: (scale, zero point or None, axis of the shown shape the
    # per-channel vectors run along, or None for one scale): value = (q - zero) * scale
    affine: tuple[TensorRef, TensorRef | tuple[int, ...] | None, int | None] | None = None
    gptq: Gptq | None = None  # a GPTQ-packed linear weight (qweight; shape is [out, in])
    bnb4: Bnb4 | None = None  # a bitsandbytes NF4/FP4 weight (two codes per byte)
    mlx: Mlx | None = None  # an MLX affine-quantized weight (uint32 words along each row)
    nbits: Nbits | None = None  # an ONNX MatMulNBits weight (blocks of 4- or 8-bit codes)

    @property
    def floating(self) -> bool:
        packed = self.affine or self.gptq or self.bnb4 or self.mlx or self.nbits
        return self.dtype in FLOAT_DTYPES or packed is not None

    @property
    def size(self) -> int:
        return math.prod(self.shape)


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


@dataclasses.dataclass
class Model:
    """One model opened for comparison; arrays are decoded on demand."""

    display: str
    tensors: dict[str, TensorRef]
    config: dict[str, Any]
    vocab: dict[str, int] | None
    adapter: dict[str, Any] | None
    quantization: str | None  # ggml type of the largest quantized tensors, if any
    problems: list[str]
    _maps: dict[str, mmap.mmap] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def layers(self) -> int:
        return 1 + max((t.layer for t in self.tensors.values() if t.layer is not None), default=-1)

    def array(
        self, t: TensorRef, rows: np.ndarray | None = None, cols: np.ndarray | None = None
    ) -> np.ndarray:
        """The tensor (or only the given rows and columns of a matrix) decoded to float32. The
        file is memory-mapped, so rows not asked for are never read."""
        import numpy as np

        m = self._map(t.file)
        if t.scale is not None:
            q = np.frombuffer(m, dtype=np.int8, count=t.size, offset=t.offset).reshape(t.shape)
            absmax = self.array(t.scale)
            if rows is not None:
                q, absmax = q[rows], absmax[rows]
            if cols is not None:
                q = q[:, cols]
            deq = (q.astype(np.float32) * (absmax / 127.0)[:, None]).astype(np.float32)
            self.release(t)
            return self._finite(t, deq)
        if t.affine is not None:
            return self._affine(t, t.affine, rows, cols)
        if t.gptq is not None:
            return self._gptq(t, t.gptq, rows, cols)
        if t.bnb4 is not None:
            return self._bnb4(t, t.bnb4, rows, cols)
        if t.mlx is not None:
            return self._mlx(t, t.mlx, rows, cols)
        if t.nbits is not None:
            return self._nbits(t, t.nbits, rows, cols)
        if t.dtype in _NUMPY and t.transposed:
            return self._transposed(t, m, rows, cols)
        if t.dtype in _NUMPY:
            raw = np.frombuffer(m, dtype=_stored(t.dtype), count=t.size, offset=t.offset)
            raw = raw.reshape(t.shape)
            if rows is not None and raw.ndim >= 2:
                raw = raw[rows]
            if cols is not None and raw.ndim == 2:
                raw = raw[:, cols]
            if rows is not None or cols is not None or raw.ndim < 2:
                out = _float32(raw, t.dtype)
                self.release(t)
                return self._finite(t, out)
            # A whole matrix: decoded a few MiB of rows at a time, each block's mapping dropped
            # once decoded, so the file's pages and the float32 copy are never both resident.
            out = np.empty(raw.shape, dtype=np.float32)
            row = t.nbytes // max(1, raw.shape[0])
            step = max(1, DECODE_BYTES // max(1, row))
            for start in range(0, raw.shape[0], step):
                out[start : start + step] = _float32(raw[start : start + step], t.dtype)
                self.release(t, start * row, min(step, raw.shape[0] - start) * row)
            return self._finite(t, out)
        import gguf

        qtype = gguf.GGMLQuantizationType[t.dtype]
        blocks = np.frombuffer(m, dtype=np.uint8, count=t.nbytes, offset=t.offset)
        blocks = blocks.reshape(math.prod(t.shape[:-1]), -1)
        shape = t.shape
        if rows is not None and len(t.shape) == 2:
            blocks, shape = blocks[rows], (len(rows), t.shape[1])
        out = np.asarray(gguf.quants.dequantize(blocks, qtype), dtype=np.float32).reshape(shape)
        if cols is not None and out.ndim == 2:
            out = out[:, cols]
        self.release(t)
        return self._finite(t, out)

    def stored(self, t: TensorRef) -> np.ndarray:
        """A matrix's values as stored, in the shape shown (a view: nothing is decoded)."""
        import numpy as np

        view = np.frombuffer(
            self._map(t.file), dtype=_stored(t.dtype), count=t.size, offset=t.offset
        )
        return view.reshape(t.shape[::-1]).T if t.transposed else view.reshape(t.shape)

    def _transposed(
        self, t: TensorRef, m: mmap.mmap, rows: np.ndarray | None, cols: np.ndarray | None
    ) -> np.ndarray:
        """A matrix stored [in, out]: rows asked for are columns of the file, so a sample is
        gathered by stride; a whole matrix is decoded a block of stored rows at a time."""
        import numpy as np

        view = self.stored(t)
        if rows is not None or cols is not None:
            sub = view[rows] if rows is not None else view
            sub = sub[:, cols] if cols is not None else sub
            out = _float32(np.ascontiguousarray(sub), t.dtype)
            self.release(t)
            return self._finite(t, out)
        out = np.empty(t.shape, dtype=np.float32)
        stored = view.T  # the file's rows
        row = t.nbytes // max(1, stored.shape[0])
        step = max(1, DECODE_BYTES // max(1, row))
        for start in range(0, stored.shape[0], step):
            out[:, start : start + step] = _float32(stored[start : start + step], t.dtype).T
            self.release(t, start * row, min(step, stored.shape[0] - start) * row)
        return self._finite(t, out)

    def _affine(
        self,
        t: TensorRef,
        affine: tuple[TensorRef, TensorRef | tuple[int, ...] | None, int | None],
        rows: np.ndarray | None,
        cols: np.ndarray | None,
    ) -> np.ndarray:
        """An ONNX quantized weight, dequantized as DequantizeLinear defines it (ONNX operator
        spec): (q - zero_point) * scale, per tensor or per channel along one axis."""
        import numpy as np

        scale_ref, zero_ref, axis = affine
        q = self.stored(t)
        q = q[rows] if rows is not None else q
        q = q[:, cols] if cols is not None and q.ndim == 2 else q
        scale = self.array(scale_ref).reshape(-1)
        if zero_ref is None:
            zero = np.zeros(1, np.float32)
        elif isinstance(zero_ref, tuple):  # kept as varints in the ONNX file
            zero = np.array(zero_ref, dtype=np.float32)
        else:
            zero = self.stored(zero_ref).astype(np.float32).reshape(-1)
        if axis is not None:  # one value per row (axis 0) or column (axis 1) of the shown shape
            pick = rows if axis == 0 else cols
            if pick is not None:
                scale, zero = scale[pick], (zero[pick] if zero.size > 1 else zero)
            shape = (-1, 1) if axis == 0 else (1, -1)
            scale, zero = scale.reshape(shape), zero.reshape(shape if zero.size > 1 else (1, 1))
        out = ((q.astype(np.float32) - zero) * scale).astype(np.float32)
        self.release(t)
        return self._finite(t, out)

    def _gptq(
        self, t: TensorRef, g: Gptq, rows: np.ndarray | None, cols: np.ndarray | None
    ) -> np.ndarray:
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
        packed = np.frombuffer(self._map(t.file), np.uint32, t.nbytes // 4, t.offset)
        chans = np.arange(out_f) if rows is None else np.asarray(rows)
        if g.awq:  # [in, out / 8]: each channel's word and slot
            packed = packed.reshape(in_f, out_f // per)
            slot = np.asarray(AWQ_SLOT, np.uint32)[chans % per] * g.bits
            q = (packed[:, chans // per] >> slot[None, :]) & mask
        else:  # GPTQ: [in / per, out], consecutive input rows in one word
            packed = packed.reshape(in_f // per, out_f)
            shifts = (np.arange(per, dtype=np.uint32) * g.bits)[None, :, None]
            q = ((packed[:, chans][:, None, :] >> shifts) & mask).reshape(in_f, len(chans))
        groups = self.stored(g.g_idx).astype(np.int64) if g.g_idx is not None else None
        if groups is None:
            size = in_f if g.group_size <= 0 else g.group_size
            groups = np.arange(in_f) // size
        zp = np.frombuffer(
            self._map(g.qzeros.file), np.uint32, g.qzeros.nbytes // 4, g.qzeros.offset
        )
        zp = zp.reshape(g.qzeros.shape)
        words, slots = chans // per, (chans % per).astype(np.uint32) * g.bits
        if g.awq:
            slots = np.asarray(AWQ_SLOT, np.uint32)[chans % per] * g.bits
        zeros = ((zp[:, words] >> slots[None, :]) & mask).astype(np.float32) + (1 if g.v1 else 0)
        scales = _float32(self.stored(g.scales)[:, chans], g.scales.dtype)
        w = (q.astype(np.float32) - zeros[groups]) * scales[groups]  # [in, chans]
        out = np.ascontiguousarray(w.T)
        if cols is not None:
            out = out[:, cols]
        self.release(t)
        return self._finite(t, out)

    def _bnb4(
        self, t: TensorRef, b: Bnb4, rows: np.ndarray | None, cols: np.ndarray | None
    ) -> np.ndarray:
        """A bitsandbytes 4-bit weight, as its dequantize_4bit defines it: element k of the
        row-major matrix is the code in the high nibble of byte k / 2 when k is even, the low
        one when odd; value = quant_map[code] * absmax[k // blocksize]. With nested (double)
        quantization absmax itself is uint8 codes: nested_quant_map[code] *
        nested_absmax[block // nested_blocksize] + nested_offset."""
        import numpy as np

        n_rows = t.shape[0] if len(t.shape) >= 2 else 1
        width = t.size // n_rows
        picked = np.arange(n_rows) if rows is None else np.asarray(rows, dtype=np.int64)
        packed = np.frombuffer(self._map(t.file), np.uint8, t.nbytes, t.offset)
        if b.nested_absmax is None or b.nested_quant_map is None:
            absmax = self.array(b.absmax).reshape(-1)
        else:  # every block's absmax at once: 1/blocksize of the elements
            coded = self.stored(b.absmax).reshape(-1)
            nested = self.array(b.nested_absmax).reshape(-1)
            index = np.arange(coded.size) // b.nested_blocksize
            absmax = self.array(b.nested_quant_map)[coded] * nested[index]
            absmax = (absmax + np.float32(b.nested_offset)).astype(np.float32)
        code_book = self.array(b.quant_map)
        out = np.empty((len(picked), width), np.float32)
        # rows a few MiB at a time: the element indices are int64, 16x the packed bytes
        step = max(1, DECODE_BYTES // (8 * max(1, width)))
        for start in range(0, len(picked), step):
            part = picked[start : start + step]
            k = (part[:, None] * width + np.arange(width)[None, :]).reshape(-1)
            byte = packed[k // 2]
            codes = np.where(k % 2 == 0, byte >> 4, byte & 0x0F)
            values = code_book[codes] * absmax[k // b.blocksize]
            out[start : start + step] = values.reshape(len(part), width)
        if len(t.shape) < 2:
            out = out.reshape(t.shape)
        elif cols is not None:
            out = out[:, cols]
        self.release(t)
        return self._finite(t, out)

    def _mlx(
        self, t: TensorRef, q: Mlx, rows: np.ndarray | None, cols: np.ndarray | None
    ) -> np.ndarray:
        """An MLX quantized matrix, as mlx.core.dequantize defines it: each row's values
        packed 32 / bits to a uint32, lowest bits first; value = scale * q + bias per group of
        group_size consecutive columns."""
        import numpy as np

        per = 32 // q.bits
        n_rows, width = t.shape
        words = np.frombuffer(self._map(t.file), np.uint32, t.nbytes // 4, t.offset)
        words = words.reshape(n_rows, width // per)
        if rows is not None:
            words = words[rows]
        shifts = np.arange(per, dtype=np.uint32) * q.bits
        codes = ((words[:, :, None] >> shifts) & ((1 << q.bits) - 1)).reshape(len(words), width)
        scales, biases = self.stored(q.scales), self.stored(q.biases)
        if rows is not None:
            scales, biases = scales[rows], biases[rows]
        group = np.arange(width) // q.group_size
        scale = _float32(np.ascontiguousarray(scales), q.scales.dtype)[:, group]
        bias = _float32(np.ascontiguousarray(biases), q.biases.dtype)[:, group]
        out = (codes.astype(np.float32) * scale + bias).astype(np.float32)
        if cols is not None:
            out = out[:, cols]
        self.release(t)
        return self._finite(t, out)

    def _nbits(
        self, t: TensorRef, q: Nbits, rows: np.ndarray | None, cols: np.ndarray | None
    ) -> np.ndarray:
        """A MatMulNBits weight, as ONNX Runtime's contrib operator defines it: B is [N,
        blocks, block_size * bits / 8] bytes of codes along K, lowest bits first; zero points
        (default 2^(bits-1)) are packed the same way per row; w[n, k] = (code - zero) *
        scale, per block of block_size. Shown as [N, K]: torch's [out, in]."""
        import numpy as np

        n_out, k_in = t.shape
        blocks = -(-k_in // q.block_size)
        raw = np.frombuffer(self._map(t.file), np.uint8, t.nbytes, t.offset).reshape(n_out, -1)
        picked = np.arange(n_out) if rows is None else np.asarray(rows)
        codes = _unpack_low_first(raw[picked], q.bits)[:, :k_in]
        scales = _float32(np.ascontiguousarray(self.stored(q.scales)), q.scales.dtype)
        scales = scales.reshape(n_out, blocks)[picked]
        if q.zeros is None:
            zeros = np.full((len(picked), blocks), 1 << (q.bits - 1), np.float32)
        else:
            zraw = self.stored(q.zeros).reshape(n_out, -1)[picked]
            zeros = _unpack_low_first(zraw, q.bits)[:, :blocks].astype(np.float32)
        block = np.arange(k_in) // q.block_size
        out = ((codes.astype(np.float32) - zeros[:, block]) * scales[:, block]).astype(np.float32)
        if cols is not None:
            out = out[:, cols]
        self.release(t)
        return self._finite(t, out)

    def _finite(self, t: TensorRef, out: np.ndarray) -> np.ndarray:
        """NaN and infinities carry no lineage signal and would poison every statistic:
        they are zeroed, and the model's problems say which tensors had them."""
        import numpy as np

        # min and max propagate NaN and reach any infinity, without a mask the size of out
        if out.size and not (np.isfinite(out.min()) and np.isfinite(out.max())):
            np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            note = f"{t.name}: non-finite values treated as 0"
            if note not in self.problems:
                self.problems.append(note)
        return out

    def release(self, t: TensorRef, start: int = 0, length: int | None = None) -> None:
        """Drop this process's mapping of bytes already decoded or compared, so memory stays
        bounded by the tensors in use rather than growing to the size of the model (the page
        cache keeps them; only the resident set shrinks)."""
        m = self._maps.get(t.file)
        if m is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        begin = t.offset + start
        end = begin + (t.nbytes - start if length is None else length)
        aligned = begin - begin % mmap.PAGESIZE
        if end > aligned:
            m.madvise(mmap.MADV_DONTNEED, aligned, end - aligned)

    def rows(self, t: TensorRef) -> int:
        return t.shape[0] if len(t.shape) >= 2 else 1

    def raw(self, t: TensorRef) -> memoryview:
        """The tensor's stored bytes, without a copy."""
        return memoryview(self._map(t.file))[t.offset : t.offset + t.nbytes]

    def _map(self, file: str) -> mmap.mmap:
        if file not in self._maps:
            with paths.open_regular(file) as f:
                self._maps[file] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[file]

    def close(self) -> None:
        for m in self._maps.values():
            m.close()
        self._maps.clear()


SAMPLE_RUNS = 8


def sample_rows(
    n: int, cap: int, seed: int | None = None, runs: int = SAMPLE_RUNS
) -> np.ndarray | None:
    """A fixed sample of cap row indices (None: take every row), in `runs` contiguous runs at
    seeded positions: contiguous rows are read sequentially from disk (or fetched with one range
    request each), where scattered rows would each cost a page fault. The same n (and seed)
    always gives the same rows, so two same-shaped tensors are sampled alike."""
    if n <= cap:
        return None
    import numpy as np

    run = cap // runs
    slots = n // run  # the tensor cut into run-sized slots; pick `runs` of them
    rng = np.random.default_rng(n if seed is None else [seed, n])
    picked = np.sort(rng.choice(slots, size=runs, replace=False))
    out: np.ndarray = (picked[:, None] * run + np.arange(run)[None, :]).ravel()
    return out


_NUMPY = {"F16", "BF16", "F32", "F64", "F8_E5M2", "F8_E4M3", "I8", "U8", "I16", "I32", "I64"}


def _stored(dtype: str) -> Any:
    """The numpy dtype a tensor's bytes are viewed as (bf16 as its 16 bits)."""
    import numpy as np

    return np.uint16 if dtype == "BF16" else _numpy_dtype(dtype)


def _float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """A stored array as float32. bf16 is the upper half of a float32, so widening it is a
    16-bit shift, written out here: importing ml_dtypes for it costs 0.5-0.7 s, more than an
    exact copy of a 90 MB model takes to decide."""
    import numpy as np

    if dtype != "BF16":
        out: np.ndarray = raw.astype(np.float32)
        return out
    wide = raw.astype(np.uint32)
    wide <<= 16
    return wide.view(np.float32)


def _numpy_dtype(dtype: str) -> Any:
    import numpy as np

    if dtype in ("BF16", "F8_E5M2", "F8_E4M3"):  # ml_dtypes costs half a second to import
        import ml_dtypes

        return {
            "BF16": ml_dtypes.bfloat16,
            "F8_E5M2": ml_dtypes.float8_e5m2,
            "F8_E4M3": ml_dtypes.float8_e4m3fn,
        }[dtype]
    return {
        "F16": np.float16,
        "F32": np.float32,
        "F64": np.float64,
        "I8": np.int8,
        "U8": np.uint8,
        "I16": np.int16,
        "I32": np.int32,
        "I64": np.int64,
    }[dtype]


# The files beside the weights that open_files reads (configuration, vocabulary, adapter).
META_FILES = ("config.json", "adapter_config.json", "tokenizer.json", "vocab.json")


def open_model(path: str, display: str | None = None) -> Model:
    """Open a model folder (safetensors shards, a GGUF file, or a PEFT adapter) or one file."""
    display = display or path
    files, folder = model_files(path, display)
    return open_files(files, folder, display)


def model_files(path: str, display: str) -> tuple[list[str], str]:
    """The weight files open_model reads for a folder or one file, and the folder of its
    META_FILES."""
    if os.path.isfile(path):
        return [path], os.path.dirname(path)
    if not os.path.isdir(path):
        raise ModelError(f"{display}: no such file or folder")
    files = []
    for i, rel in enumerate(paths.walk_files(path)):
        if i >= MAX_FILES:
            raise ModelError(f"{display}: more than {MAX_FILES} files")
        if rel.endswith(registry.TENSOR_SUFFIXES) and "/" not in rel:
            files.append(os.path.join(path, rel))
    return files, path


def open_files(files: list[str], folder: str, display: str) -> Model:
    """A model made of these weight files, with config/tokenizer/adapter files from folder."""
    config = _json(os.path.join(folder, META_FILES[0])) or {}
    adapter = _json(os.path.join(folder, META_FILES[1]))
    vocab = _vocab(folder)
    tensors: dict[str, TensorRef] = {}
    problems: list[str] = []
    arch = str(config.get("model_type") or "")
    quant: dict[str, int] = {}
    for file in sorted(files):
        rel = os.path.relpath(file, folder)
        magic = _magic(file)
        if lfs.looks_like_pointer(magic):
            problems.append(f"{rel}: a Git LFS pointer (content not checked out: git lfs pull)")
            continue
        fmt = sniff.sniff(magic, file, _size(file))
        reader = READERS.get(fmt)
        if reader is None:
            problems.append(f"{rel}: {fmt} tensors are not read by the lineage tiers")
            continue
        try:
            refs, own = reader(file)
            arch = arch or str(own.get("model_type") or "")
            config = config or own
        except (FormatError, OSError) as e:
            problems.append(f"{rel}: {getattr(e, 'strerror', None) or e}")
            continue
        for r in refs:
            if r.floating and r.dtype not in _NUMPY and not _dequantizable(r.dtype):
                problems.append(f"{rel}: tensor {r.name}: {r.dtype} cannot be dequantized; skipped")
                continue
            if r.name in tensors:
                problems.append(f"{rel}: tensor {r.name} is stored twice")
                continue
            tensors[r.name] = r
            if r.nbits is not None:
                label = f"ONNX MatMulNBits {r.nbits.bits}-bit"
                quant[label] = quant.get(label, 0) + r.nbytes
            elif r.affine is not None:  # ONNX 8-bit weights
                kind = "per-channel" if r.affine[2] is not None else "per-tensor"
                label = f"ONNX {'int8' if r.dtype == 'I8' else 'uint8'} {kind}"
                quant[label] = quant.get(label, 0) + r.nbytes
            elif r.dtype not in _NUMPY and r.floating:
                quant[r.dtype] = quant.get(r.dtype, 0) + r.nbytes
    _int8_rowwise(tensors, quant)
    _fold_gptq(tensors, quant, _gptq_config(folder, config), problems)
    _fold_bnb4(tensors, quant, problems)
    _fold_mlx(tensors, quant, config.get("quantization"), problems)
    if not tensors:
        problems.append("no readable safetensors, GGUF or ONNX tensors")
    canon = _Canonical(arch, tensors)
    tensors = {n: canon.apply(t) for n, t in tensors.items()}
    return Model(
        display=display,
        tensors=tensors,
        config=config,
        vocab=vocab,
        adapter=adapter,
        quantization=max(quant, key=lambda k: quant[k]) if quant else None,
        problems=problems,
    )


_DEQUANTIZABLE: dict[str, bool] = {}


def _dequantizable(dtype: str) -> bool:
    """Whether gguf-py can dequantize this ggml type (it lacks a few, e.g. Q8_1, Q8_K)."""
    if dtype not in _DEQUANTIZABLE:
        import gguf
        import numpy as np

        try:
            qtype = gguf.GGMLQuantizationType[dtype]
            block = gguf.GGML_QUANT_SIZES[qtype][1]
            gguf.quants.dequantize(np.zeros((1, block), np.uint8), qtype)
            _DEQUANTIZABLE[dtype] = True
        except (KeyError, NotImplementedError, ValueError):
            _DEQUANTIZABLE[dtype] = False
    return _DEQUANTIZABLE[dtype]


COMPARE_CHUNK = 8 << 20


def same_bytes(a: Model, ta: TensorRef, b: Model, tb: TensorRef) -> bool:
    """Whether two tensors hold the same bytes: compared chunk by chunk, stopping at the first
    difference, with each chunk released once compared. A matrix stored transposed (ONNX
    MatMul) is compared value by value in the shape both show."""
    if ta.nbytes != tb.nbytes:
        return False
    if ta.transposed or tb.transposed:
        return _same_values(a, ta, b, tb)
    start, chunk = 0, 1 << 16  # a small first chunk: derived tensors differ at once
    with a.raw(ta) as va, b.raw(tb) as vb:
        while start < ta.nbytes:
            n = min(chunk, ta.nbytes - start)
            equal = bytes(va[start : start + n]) == bytes(vb[start : start + n])
            a.release(ta, start, n)
            b.release(tb, start, n)
            if not equal:
                return False
            start, chunk = start + n, COMPARE_CHUNK
    return True


def _same_values(a: Model, ta: TensorRef, b: Model, tb: TensorRef) -> bool:
    import numpy as np

    if ta.shape != tb.shape or ta.dtype != tb.dtype or ta.dtype not in _NUMPY:
        return False
    va, vb = a.stored(ta), b.stored(tb)
    step = max(1, COMPARE_CHUNK // max(1, ta.nbytes // max(1, ta.shape[0])))
    for start in range(0, ta.shape[0], step):
        if not np.array_equal(va[start : start + step], vb[start : start + step]):
            return False
    a.release(ta)
    b.release(tb)
    return True


def _magic(file: str) -> bytes:
    """The first bytes of a file: enough to tell an LFS pointer and sniff its format (b"" if
    unreadable)."""
    try:
        with paths.open_regular(file) as f:
            return f.read(max(registry.SNIFF_BYTES, 16))
    except OSError:
        return b""


def _int8_rowwise(tensors: dict[str, TensorRef], quant: dict[str, int]) -> None:
    """Fold LLM.int8() weights and their row scales into one dequantizable tensor."""
    for name, t in list(tensors.items()):
        if t.dtype != "I8" or len(t.shape) != 2 or not name.endswith(".weight"):
            continue
        prefix = name[: -len("weight")]
        scb = tensors.get(prefix + "SCB")
        if scb is None or scb.dtype != "F32" or scb.shape != (t.shape[0],):
            continue
        tensors[name] = dataclasses.replace(t, dtype=INT8_ROWWISE, scale=scb)
        del tensors[prefix + "SCB"]
        tensors.pop(prefix + "weight_format", None)
        quant[INT8_ROWWISE] = quant.get(INT8_ROWWISE, 0) + t.nbytes


def _indices_below(t: TensorRef, limit: int) -> bool:
    """Whether every value of a small integer tensor (g_idx) lies in [0, limit)."""
    import numpy as np

    with paths.open_regular(t.file) as f:
        data = os.pread(f.fileno(), t.nbytes, t.offset)
    values = np.frombuffer(data, dtype=_stored(t.dtype), count=t.size)
    return bool(values.size == 0 or (values.min() >= 0 and values.max() < limit))


def _gptq_config(folder: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The GPTQ or AWQ (GEMM) settings of a checkpoint: config.json's quantization_config
    (transformers, Optimum, GPTQModel, AutoAWQ) or quantize_config.json (AutoGPTQ)."""
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        qc = _json(os.path.join(folder, "quantize_config.json"))
    if not isinstance(qc, dict):
        return None
    method = str(qc.get("quant_method", "gptq")).lower()
    version = str(qc.get("version", "gemm")).lower()
    return qc if method == "gptq" or (method == "awq" and version == "gemm") else None


def _fold_gptq(
    tensors: dict[str, TensorRef],
    quant: dict[str, int],
    qc: dict[str, Any] | None,
    problems: list[str],
) -> None:
    """Fold each GPTQ or AWQ layer's qweight, qzeros, scales (and GPTQ's g_idx) into one
    `<layer>.weight`."""
    for name, t in list(tensors.items()):
        if not name.endswith(".qweight") or t.dtype != "I32" or len(t.shape) != 2:
            continue
        prefix = name[: -len("qweight")]
        qzeros, scales = tensors.get(prefix + "qzeros"), tensors.get(prefix + "scales")
        g_idx = tensors.get(prefix + "g_idx")
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
        tensors[weight] = dataclasses.replace(
            t, name=weight, role=weight, shape=(out_f, in_f), gptq=spec
        )
        for part in ("qweight", "qzeros", "scales", "g_idx"):
            if prefix + part != weight:
                tensors.pop(prefix + part, None)
        label = f"{'AWQ' if awq else 'GPTQ'} {bits}-bit"
        quant[label] = quant.get(label, 0) + t.nbytes


def _fold_mlx(
    tensors: dict[str, TensorRef], quant: dict[str, int], qc: Any, problems: list[str]
) -> None:
    """Fold each MLX quantized weight (uint32 `.weight` with `.scales` and `.biases`, as
    mlx-lm saves them; config.json's `quantization` gives bits and group size)."""
    if not isinstance(qc, dict):
        return
    bits, size = qc.get("bits"), qc.get("group_size")
    for name, t in list(tensors.items()):
        prefix = name.removesuffix("weight")
        scales, biases = tensors.get(prefix + "scales"), tensors.get(prefix + "biases")
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
        tensors[name] = dataclasses.replace(
            t, shape=(t.shape[0], width), mlx=Mlx(scales, biases, bits, size)
        )
        del tensors[prefix + "scales"], tensors[prefix + "biases"]
        label = f"MLX {bits}-bit"
        quant[label] = quant.get(label, 0) + t.nbytes


BNB_STATE = ".quant_state.bitsandbytes__"
MAX_BNB_STATE = 1 << 16  # the JSON of one layer's quantization state is ~200 bytes


def _fold_bnb4(tensors: dict[str, TensorRef], quant: dict[str, int], problems: list[str]) -> None:
    """Fold each bitsandbytes 4-bit weight and its serialised quant state (absmax, quant_map,
    nested statistics, and the JSON `quant_state.bitsandbytes__nf4|fp4`) into one tensor."""
    for name, state in list(tensors.items()):
        if BNB_STATE not in name or state.dtype != "U8" or len(state.shape) != 1:
            continue
        weight = name[: name.index(BNB_STATE)]
        t = tensors.get(weight)
        parts = {
            p: tensors.get(f"{weight}.{p}")
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
        tensors[weight] = dataclasses.replace(t, shape=shape, bnb4=spec)
        for key in list(tensors):
            if key.startswith(weight + ".") and key != weight:
                del tensors[key]
        label = f"bitsandbytes {kind}"
        quant[label] = quant.get(label, 0) + t.nbytes


def _json(path: str) -> dict[str, Any] | None:
    try:
        with paths.open_regular(path) as f:
            data = json.loads(paths.read_capped(f, MAX_JSON_BYTES))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _vocab(folder: str) -> dict[str, int] | None:
    """Token string -> id from tokenizer.json (fast tokenizers) or vocab.json (GPT-2 style)."""
    tok = _json(os.path.join(folder, META_FILES[2]))
    vocab: Any = None
    if tok is not None:
        model = tok.get("model")
        vocab = model.get("vocab") if isinstance(model, dict) else None
        if isinstance(vocab, list):  # unigram: [[piece, score], ...]
            vocab = {p[0]: i for i, p in enumerate(vocab) if isinstance(p, list) and p}
        added = tok.get("added_tokens")
        if isinstance(vocab, dict) and isinstance(added, list):
            vocab = dict(vocab)
            for a in added:
                if isinstance(a, dict) and isinstance(a.get("content"), str):
                    vocab[a["content"]] = a.get("id")
    else:
        vocab = _json(os.path.join(folder, META_FILES[3]))
    if not isinstance(vocab, dict):
        return None
    return {k: v for k, v in vocab.items() if isinstance(k, str) and isinstance(v, int)}


def _safetensors(file: str) -> tuple[list[TensorRef], dict[str, Any]]:
    from gate.hashing import read_safetensors_header

    header = read_safetensors_header(file)
    return [
        TensorRef(
            t.name,
            t.name,
            None,
            t.shape,
            t.dtype,
            file,
            header.data_start + t.begin,
            t.end - t.begin,
        )
        for t in header.tensors
    ], {}


def _gguf(file: str) -> tuple[list[TensorRef], dict[str, Any]]:
    with paths.open_regular(file) as f:
        size = os.fstat(f.fileno()).st_size
        fd = f.fileno()
        header = gguf_format.parse_header(b"", size, lambda at, n: os.pread(fd, n, at))
    refs = []
    for t in header.tensors:
        shape = tuple(reversed(t.shape))  # GGUF lists the innermost dimension first
        if t.dtype not in _NUMPY and shape and shape[-1] % _block(t.dtype):
            raise FormatError(f"tensor {t.name}: row length not a multiple of its block size")
        refs.append(
            TensorRef(
                t.name,
                t.name,
                None,
                shape,
                t.dtype,
                file,
                header.data_start + t.begin,
                t.end - t.begin,
            )
        )
    return refs, _gguf_config(header.metadata)


def _onnx(file: str) -> tuple[list[TensorRef], dict[str, Any]]:
    """An ONNX model's stored tensors, inline or in external data (which must lie in the
    model's folder: the check's PG314 says why one does not), named and oriented as the module
    that exported them (_onnx_view), int8 weights with their scales (_onnx_quantized)."""
    header = onnx_format.read(file)
    by_name = {t.name: t for t in header.tensors}
    folder = os.path.dirname(file)
    refs = []
    for t in header.tensors:
        uses = header.uses.get(t.name, [])
        nbits = _onnx_nbits(t, uses, by_name)
        if nbits is not None:
            u, shape, scale, zero, bits, size = nbits
            name = u.scope + ".weight" if u.scope else t.name
            spec = Nbits(
                _onnx_ref(scale, file, folder),
                None if zero is None else _onnx_ref(zero, file, folder),
                bits,
                size,
            )
            ref = _onnx_ref(t, file, folder, name if name not in by_name else t.name)
            refs.append(dataclasses.replace(ref, shape=shape, nbits=spec))
            continue
        quant = _onnx_quantized(t, uses, by_name, header)
        if quant is not None:
            consumer, scale, zero, axis = quant
            name, transposed = _onnx_view(t, [consumer], set(by_name), weight=True)
            if name == t.name and t.name.endswith("_quantized"):
                name = t.name.removesuffix("_quantized")
            shown = None if axis is None else (1 - axis if transposed else axis)
            affine = (
                _onnx_ref(scale, file, folder),
                _onnx_zero(zero, file, folder),
                shown,
            )
            refs.append(_onnx_ref(t, file, folder, name, transposed, affine))
            continue
        name, transposed = _onnx_view(t, uses, set(by_name))
        weight = any(u.index in _ONNX_WEIGHTS.get(u.op, ()) for u in uses)
        if not name.endswith((".weight", ".bias")) and not weight:
            continue  # a constant the exporter computed (rotary tables, masks): not a weight
        if t.begin is not None or t.external is not None:  # else: varints (shape constants)
            refs.append(_onnx_ref(t, file, folder, name, transposed))
    return refs, {}


def _onnx_ref(
    t: onnx_format.OnnxTensor,
    file: str,
    folder: str,
    name: str | None = None,
    transposed: bool = False,
    affine: tuple[TensorRef, TensorRef | tuple[int, ...] | None, int | None] | None = None,
) -> TensorRef:
    name = name or t.name
    shape = t.shape[::-1] if transposed else t.shape
    if t.begin is not None and t.end is not None:
        where, offset, length = file, t.begin, t.end - t.begin
    elif t.external is not None:
        real, problem = paths.resolve_inside(folder, t.external.location)
        if problem is not None:
            raise FormatError(f"tensor {t.name}: external data {t.external.location!r}: {problem}")
        wanted = t.nbytes if t.external.length is None else t.external.length
        if wanted is None or t.external.offset + wanted > _size(real):
            missing = f"external data {t.external.location!r} is missing or too short"
            raise FormatError(f"tensor {t.name}: {missing}")
        where, offset, length = real, t.external.offset, wanted
    else:
        raise FormatError(f"tensor {t.name}: its values are varints, not stored bytes")
    return TensorRef(
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


def _unpack_low_first(raw: np.ndarray, bits: int) -> np.ndarray:
    """Codes of `bits` (4 or 8) packed in bytes, lowest bits first, along the last axis."""
    import numpy as np

    if bits == 8:
        return raw
    return np.stack([raw & 0x0F, raw >> 4], axis=-1).reshape(*raw.shape[:-1], -1)


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
    attrs = dict(u.ints)
    n, k, bits, size = (attrs.get(a, 0) for a in ("N", "K", "bits", "block_size"))
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
) -> TensorRef | tuple[int, ...] | None:
    """A zero point: stored bytes, or (as ONNX Runtime writes small tensors) varints."""
    if t is None:
        return None
    if t.varints is None:
        return _onnx_ref(t, file, folder)
    with paths.open_regular(file) as f:
        fd = f.fileno()
        return tuple(onnx_format.varint_values(t, lambda at, n: os.pread(fd, n, at)))


def _onnx_quantized(
    t: onnx_format.OnnxTensor,
    uses: list[onnx_format.Use],
    by_name: dict[str, onnx_format.OnnxTensor],
    header: onnx_format.OnnxHeader,
) -> (
    tuple[onnx_format.Use, onnx_format.OnnxTensor, onnx_format.OnnxTensor | None, int | None] | None
):
    """An 8-bit weight and how to dequantize it: (the node that uses it as a weight, scale,
    zero point, stored axis of per-channel scales or None). Three layouts: QDQ's
    DequantizeLinear(q, scale, zero, axis) before MatMul/Gemm/Gather; ONNX Runtime's dynamic
    quantization, MatMulInteger(x, q, x_zero, q_zero) with the scale applied after it, and
    the Gather of a quantized embedding table; the last two name the scale `<weight>_scale`
    (ONNX Runtime's quantizer convention, onnxruntime/python/tools/quantization)."""
    if t.dtype not in ("I8", "U8") or len(uses) != 1 or len(t.shape) != 2:
        return None
    u = uses[0]
    base = t.name.removesuffix("_quantized")
    if u.op == "DequantizeLinear" and u.index == 0:
        scale = by_name.get(u.inputs[1]) if len(u.inputs) > 1 else None
        zero = by_name.get(u.inputs[2]) if len(u.inputs) > 2 else None
        readers = header.uses.get(u.outputs[0], []) if u.outputs else []
        consumer = readers[0] if len(readers) == 1 else dataclasses.replace(u, op="Gather", index=0)
        axis = u.axis % 2
    elif (u.op == "MatMulInteger" and u.index == 1) or (u.op == "Gather" and u.index == 0):
        scale = by_name.get(base + "_scale")
        zero = by_name.get(u.inputs[3]) if u.op == "MatMulInteger" and len(u.inputs) > 3 else None
        zero = zero or by_name.get(base + "_zero_point")
        consumer = dataclasses.replace(u, op="MatMul") if u.op == "MatMulInteger" else u
        axis = 1 if u.op == "MatMulInteger" else 0
    else:
        return None
    if scale is None or scale.dtype not in ("F32", "F16", "BF16") or math.prod(scale.shape) < 1:
        return None
    channels = math.prod(scale.shape)
    if channels == 1:
        return consumer, scale, zero, None
    if channels != t.shape[axis] or (
        zero is not None and math.prod(zero.shape) not in (1, channels)
    ):
        return None
    return consumer, scale, zero, axis


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


# The lineage reader of each tensor format of the registry (registry.TENSOR_FORMATS; a test
# keeps the two in step): the file's tensors, and what its own metadata says of the model's
# configuration (GGUF carries it; a safetensors model's is in config.json beside it).
READERS: dict[str, Callable[[str], tuple[list[TensorRef], dict[str, Any]]]] = {
    "gguf": _gguf,
    "onnx": _onnx,
    "safetensors": _safetensors,
}


def _size(file: str) -> int:
    try:
        return os.stat(file).st_size
    except OSError:
        return 0


def _block(dtype: str) -> int:
    return next(b for n, b, _ in gguf_format.GGML_TYPES.values() if n == dtype)


def _gguf_config(meta: dict[str, Any]) -> dict[str, Any]:
    arch = meta.get("general.architecture")
    keys = {
        "embedding_length": "hidden_size",
        "block_count": "num_hidden_layers",
        "feed_forward_length": "intermediate_size",
        "attention.head_count": "num_attention_heads",
        "attention.head_count_kv": "num_key_value_heads",
    }
    out: dict[str, Any] = {"model_type": arch} if isinstance(arch, str) else {}
    for k, v in keys.items():
        if isinstance(meta.get(f"{arch}.{k}"), int):
            out[v] = meta[f"{arch}.{k}"]
    return out


class _Canonical:
    """Canonical tensor names: the GGUF names llama.cpp uses (`blk.N.attn_q.weight`), found with
    gguf-py's maintained per-architecture tables, so a Hugging Face checkpoint and its GGUF
    conversion line up; a leading prefix nobody knows ('net.') is tried away."""

    def __init__(self, arch: str, tensors: dict[str, TensorRef]) -> None:
        self.map: Any = None
        layers = 1 + max(
            (int(m.group(2)) for n in tensors if (m := _GENERIC_LAYER.match(n))), default=0
        )
        try:
            import gguf

            names = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
            known = names.get(arch.replace("_", "-")) or names.get(arch) or gguf.MODEL_ARCH.LLAMA
            self.map = gguf.get_tensor_name_map(known, max(layers, 1))
        except ImportError:  # pragma: no cover - gguf is part of the lineage extra
            self.map = None

    def name(self, raw: str) -> str:
        if raw.startswith(("blk.", "token_embd", "output", "position_embd")) or self.map is None:
            return raw
        parts = raw.split(".")
        for cut in range(min(3, len(parts) - 1)):
            rest = ".".join(parts[cut:])
            for candidate in (rest, "model." + rest, "transformer." + rest):
                found = self.map.get_name(candidate, try_suffixes=(".weight", ".bias"))
                if found:
                    return str(found)
        return raw

    def apply(self, t: TensorRef) -> TensorRef:
        name = self.name(t.name)
        m = _LAYER.match(name)
        if m:
            return dataclasses.replace(t, role=f"blk.*.{m.group(2)}", layer=int(m.group(1)))
        g = _GENERIC_LAYER.match(name)
        if g:  # keep only the container's own name: 'x.model.layers.3.fc1' -> 'layers.*.fc1'
            container = g.group(1).rstrip(".").rsplit(".", 1)[-1]
            role = f"{container}.*{g.group(3)}"
            return dataclasses.replace(t, role=role, layer=int(g.group(2)))
        return dataclasses.replace(t, role=name)


def iter_float(model: Model) -> Iterator[TensorRef]:
    """Floating-point tensors with more than one element, in storage order."""
    for t in model.tensors.values():
        if t.floating and t.size > 1:
            yield t
