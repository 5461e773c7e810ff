"""What the lineage readers and decoders share: where a tensor lives (TensorRef), the dtypes
numpy reads directly, and decoding stored values to float32. A leaf module: models.py, the
ONNX reader and the packed-layout decoders all import it, and it imports none of them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import TYPE_CHECKING, Any

from gate import paths
from gate.formats import gguf as gguf_format

if TYPE_CHECKING:
    import numpy as np

    from gate.lineage.packed import Affine, Bnb4, Gptq, Mlx, Nbits

DECODE_BYTES = 4 << 20  # file bytes of a whole matrix decoded (and released) at a time
MAX_JSON_BYTES = 64 << 20  # config.json / tokenizer.json / adapter_config.json

# LLM.int8() checkpoints (bitsandbytes, as transformers saves them): `X.weight` int8 rows with
# `X.SCB`, each row's absolute maximum; a weight is int8 * SCB / 127 (Dettmers et al. 2022).
INT8_ROWWISE = "INT8_ROWWISE"
FLOAT_DTYPES = frozenset(
    {"F16", "BF16", "F32", "F64", "F8_E5M2", "F8_E4M3", INT8_ROWWISE}
    | {name for name, block, _ in gguf_format.GGML_TYPES.values() if block > 1}
)


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
    affine: Affine | None = None  # an ONNX 8- or 4-bit weight with its scale and zero point
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


NUMPY_DTYPES = {"F16", "BF16", "F32", "F64", "F8_E5M2", "F8_E4M3", "I8", "U8", "I16", "I32", "I64"}


def stored_dtype(dtype: str) -> Any:
    """The numpy dtype a tensor's bytes are viewed as (bf16 as its 16 bits)."""
    import numpy as np

    return np.uint16 if dtype == "BF16" else numpy_dtype(dtype)


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
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


def rounded(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values rounded to a float dtype and widened back (round to nearest even, as a
    cast by torch or ml_dtypes does). bf16 is rounded on the bits, without ml_dtypes (see
    to_float32); KeyError for quantized and integer types."""
    import numpy as np

    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "BF16":
        bits = x.view(np.uint32)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & np.uint32(0xFFFF0000)
        return bits.view(np.float32)
    if dtype not in ("F16", "F32", "F64", "F8_E5M2", "F8_E4M3"):
        raise KeyError(dtype)
    out: np.ndarray = x.astype(numpy_dtype(dtype)).astype(np.float32)
    return out


def numpy_dtype(dtype: str) -> Any:
    """The numpy dtype of a safetensors dtype name (KeyError for others)."""
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


def read_json(path: str) -> dict[str, Any] | None:
    """A JSON object file (config, tokenizer), capped; None when absent or not one."""
    try:
        with paths.open_regular(path) as f:
            data = json.loads(paths.read_capped(f, MAX_JSON_BYTES))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def file_size(file: str) -> int:
    """A file's size (0 when it cannot be stat'ed)."""
    try:
        return os.stat(file).st_size
    except OSError:
        return 0
