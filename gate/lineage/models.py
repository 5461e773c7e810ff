"""A model as the lineage tiers see it: tensors by canonical role, config, vocabulary, adapter.

Weights are memory-mapped and decoded one tensor at a time (bf16 by a shift, fp8 through
ml_dtypes, GGUF quantizations through the gguf package), so memory stays at a small multiple of
the largest tensor. Headers are read with the gate's own bounded parsers, never with a library
that trusts the file. Pickle checkpoints are not read here (they are never unpickled; see
formats/pickles).
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import os
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from gate import lfs, paths
from gate.errors import FormatError
from gate.formats import gguf as gguf_format
from gate.formats import registry, sniff
from gate.lineage import onnx_reader, packed, tensors
from gate.lineage.tensors import (
    FLOAT_DTYPES,
    INT8_ROWWISE,
    NUMPY_DTYPES,
    TensorRef,
    file_size,
    read_json,
    stored_dtype,
    to_float32,
)

if TYPE_CHECKING:
    import numpy as np

MAX_FILES = 4096
_GENERIC_LAYER = re.compile(r"^(.*?\.)(\d+)(\..+)$")


class ModelError(FormatError):
    """A model folder or file that cannot be read as a model at all."""


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
    def sampled(self) -> bool:
        """Only a sample of rows is present (a Hub base, or a model cut to its rows): layers
        are comparable at the same index only."""
        return any(t.full_shape is not None for t in self.tensors.values())

    @property
    def layers(self) -> int:
        return 1 + max((t.layer for t in self.tensors.values() if t.layer is not None), default=-1)

    def array(
        self, t: TensorRef, rows: np.ndarray | None = None, cols: np.ndarray | None = None
    ) -> np.ndarray:
        """The tensor (or only the given rows and columns of a matrix) decoded to float32. The
        file is memory-mapped, so rows not asked for are never read."""
        import numpy as np

        m = self.mapped(t.file)
        if t.scale is not None:
            q = np.frombuffer(m, dtype=np.int8, count=t.size, offset=t.offset).reshape(t.shape)
            absmax = self.array(t.scale)
            if rows is not None:
                q, absmax = q[rows], absmax[rows]
            if cols is not None:
                q = q[:, cols]
            deq = (q.astype(np.float32) * (absmax / 127.0)[:, None]).astype(np.float32)
            self.release(t)
            return self.finite(t, deq)
        unpacked = packed.decode(self, t, rows, cols)
        if unpacked is not None:
            return unpacked
        if t.dtype in NUMPY_DTYPES and t.transposed:
            return self._transposed(t, m, rows, cols)
        if t.dtype in NUMPY_DTYPES:
            raw = np.frombuffer(m, dtype=stored_dtype(t.dtype), count=t.size, offset=t.offset)
            raw = raw.reshape(t.shape)
            if rows is not None and raw.ndim >= 2:
                raw = raw[rows]
            if cols is not None and raw.ndim == 2:
                raw = raw[:, cols]
            if rows is not None or cols is not None or raw.ndim < 2:
                out = to_float32(raw, t.dtype)
                self.release(t)
                return self.finite(t, out)
            # A whole matrix: decoded a few MiB of rows at a time, each block's mapping dropped
            # once decoded, so the file's pages and the float32 copy are never both resident.
            out = np.empty(raw.shape, dtype=np.float32)
            row = t.nbytes // max(1, raw.shape[0])
            step = max(1, tensors.DECODE_BYTES // max(1, row))
            for start in range(0, raw.shape[0], step):
                out[start : start + step] = to_float32(raw[start : start + step], t.dtype)
                self.release(t, start * row, min(step, raw.shape[0] - start) * row)
            return self.finite(t, out)
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
        return self.finite(t, out)

    def stored(self, t: TensorRef) -> np.ndarray:
        """A matrix's values as stored, in the shape shown (a view: nothing is decoded)."""
        import numpy as np

        view = np.frombuffer(
            self.mapped(t.file), dtype=stored_dtype(t.dtype), count=t.size, offset=t.offset
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
            out = to_float32(np.ascontiguousarray(sub), t.dtype)
            self.release(t)
            return self.finite(t, out)
        out = np.empty(t.shape, dtype=np.float32)
        stored = view.T  # the file's rows
        row = t.nbytes // max(1, stored.shape[0])
        step = max(1, tensors.DECODE_BYTES // max(1, row))
        for start in range(0, stored.shape[0], step):
            out[:, start : start + step] = to_float32(stored[start : start + step], t.dtype).T
            self.release(t, start * row, min(step, stored.shape[0] - start) * row)
        return self.finite(t, out)

    def finite(self, t: TensorRef, out: np.ndarray) -> np.ndarray:
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
        return memoryview(self.mapped(t.file))[t.offset : t.offset + t.nbytes]

    def mapped(self, file: str) -> mmap.mmap:
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
    files, torch_files = [], []
    for i, rel in enumerate(paths.walk_files(path)):
        if i >= MAX_FILES:
            raise ModelError(f"{display}: more than {MAX_FILES} files")
        if "/" in rel:
            continue
        if rel.endswith(registry.TENSOR_SUFFIXES):
            files.append(os.path.join(path, rel))
        elif registry.holds_torch_weights(rel):
            torch_files.append(os.path.join(path, rel))
    return files or torch_files, path


def open_files(files: list[str], folder: str, display: str) -> Model:
    """A model made of these weight files, with config/tokenizer/adapter files from folder."""
    config = read_json(os.path.join(folder, META_FILES[0])) or {}
    adapter = read_json(os.path.join(folder, META_FILES[1]))
    vocab = read_vocab(folder)
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
        fmt = sniff.sniff(magic, file, file_size(file))
        reader = READERS.get(fmt)
        if reader is None:
            problems.append(f"{rel}: {fmt} tensors are not read by the lineage tiers")
            continue
        try:
            refs, own, unread = reader(file)
            problems += [f"{rel}: {p}" for p in unread]
            arch = arch or str(own.get("model_type") or "")
            config = config or own
        except (FormatError, OSError) as e:
            problems.append(f"{rel}: {getattr(e, 'strerror', None) or e}")
            continue
        for r in refs:
            if r.dtype in FLOAT_DTYPES - NUMPY_DTYPES and not _dequantizable(r.dtype):
                problems.append(f"{rel}: tensor {r.name}: {r.dtype} cannot be dequantized; skipped")
                continue
            if r.name in tensors:
                problems.append(f"{rel}: tensor {r.name} is stored twice")
                continue
            tensors[r.name] = r
            if r.nbits is not None:
                label = f"ONNX MatMulNBits {r.nbits.bits}-bit"
                quant[label] = quant.get(label, 0) + r.nbytes
            elif r.affine is not None:  # ONNX 8- and 4-bit weights
                kind = {"I8": "int8", "U8": "uint8", "I4": "int4", "U4": "uint4"}[r.dtype]
                label = f"ONNX {kind} {r.affine.label}"
                quant[label] = quant.get(label, 0) + r.nbytes
            elif r.dtype not in NUMPY_DTYPES and r.floating:
                quant[r.dtype] = quant.get(r.dtype, 0) + r.nbytes
    _int8_rowwise(tensors, quant)
    packed.fold(tensors, quant, folder, config, problems)
    if not tensors:
        problems.append("no readable safetensors, GGUF, ONNX or torch tensors")
    tensors = canonical(arch, tensors)
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

    if ta.shape != tb.shape or ta.dtype != tb.dtype or ta.dtype not in NUMPY_DTYPES:
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


def read_vocab(folder: str) -> dict[str, int] | None:
    """Token string -> id from tokenizer.json (fast tokenizers) or vocab.json (GPT-2 style)."""
    tok = read_json(os.path.join(folder, META_FILES[2]))
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
        vocab = read_json(os.path.join(folder, META_FILES[3]))
    if not isinstance(vocab, dict):
        return None
    return {k: v for k, v in vocab.items() if isinstance(k, str) and isinstance(v, int)}


def _safetensors(file: str) -> tuple[list[TensorRef], dict[str, Any], list[str]]:
    from gate.hashing import read_safetensors_header

    header = read_safetensors_header(file)
    return (
        [
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
        ],
        {},
        [],
    )


def _gguf(file: str) -> tuple[list[TensorRef], dict[str, Any], list[str]]:
    with paths.open_regular(file) as f:
        size = os.fstat(f.fileno()).st_size
        fd = f.fileno()
        header = gguf_format.parse_header(b"", size, lambda at, n: os.pread(fd, n, at))
    refs = []
    for t in header.tensors:
        shape = tuple(reversed(t.shape))  # GGUF lists the innermost dimension first
        if t.dtype not in NUMPY_DTYPES and shape and shape[-1] % _block(t.dtype):
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
    return refs, _gguf_config(header.metadata), []


# The lineage reader of each format of the registry the tiers open (LINEAGE_FORMATS; a test
# keeps the two in step): the file's tensors, and what its own metadata says of the model's
# configuration (GGUF carries it; a safetensors model's is in config.json beside it), and
# what in it could not be read.
def _torch(file: str) -> tuple[list[TensorRef], dict[str, Any], list[str]]:
    from gate.formats import torch_zip

    ckpt = torch_zip.read(file)
    refs = [
        TensorRef(t.name, t.name, None, t.shape, t.dtype, file, t.offset, t.nbytes)
        for t in ckpt.tensors
    ]
    return refs, {}, list(ckpt.problems)


READERS: dict[str, Callable[[str], tuple[list[TensorRef], dict[str, Any], list[str]]]] = {
    "gguf": _gguf,
    "onnx": onnx_reader.read,
    "pickle": _torch,
    "safetensors": _safetensors,
}


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


# model_type spellings gguf-py files under another architecture's tables: the RoBERTa family
# keeps BERT's module names behind its own prefix
_ARCH_ALIASES = {
    "roberta": "bert",
    "xlm-roberta": "bert",
    "camembert": "bert",
    "qwen2_moe": "qwen2moe",
    "qwen3_moe": "qwen3moe",
    "phi": "phi2",
}
# the prefixes a checkpoint's module names are tried with (a RoBERTa's 'roberta.encoder...'
# is BERT's 'bert.encoder...' once its own prefix is cut)
_HEADS = ("", "model.", "transformer.", "bert.")
_STACK_LAYER = re.compile(r"^((?:[a-z]+\.)?)blk\.(\d+)\.(.+)$")  # 'enc.blk.3.attn_q.weight'


def canonical(arch: str, tensors: dict[str, TensorRef]) -> dict[str, TensorRef]:
    """Every tensor with its canonical role and layer (see _Canonical). Roles are unique within
    a model: where a table gives two tensors one role at one layer (Whisper's encoder and decoder
    attention both read as 'blk.N.attn_q'), those are named from their own module paths, with
    as much of the path as tells them apart ('encoder.layers.*.self_attn.q_proj.weight')."""
    canon = _Canonical(arch, tensors)
    out = {n: canon.apply(t) for n, t in tensors.items()}
    depth = 1
    while depth <= 8:
        seen: dict[tuple[str, int | None], list[str]] = {}
        for n, t in out.items():
            seen.setdefault((t.role, t.layer), []).append(n)
        clashing = [n for names in seen.values() if len(names) > 1 for n in names]
        if not clashing:
            break
        depth += 1
        for n in clashing:
            role, layer = _generic(n, depth)
            out[n] = dataclasses.replace(out[n], role=role, layer=layer)
    return out


def _generic(name: str, depth: int = 1) -> tuple[str, int | None]:
    """A role from a module path alone: the layer index replaced by '*', with the last `depth`
    parts of the path before it ('x.model.layers.3.fc1' -> 'layers.*.fc1' at depth 1)."""
    g = _GENERIC_LAYER.match(name)
    if not g:
        return name, None
    container = ".".join(g.group(1).rstrip(".").split(".")[-depth:])
    return f"{container}.*{g.group(3)}", int(g.group(2))


class _Canonical:
    """Canonical tensor names: the GGUF names llama.cpp uses (`blk.N.attn_q.weight`), found with
    gguf-py's maintained per-architecture tables, so a Hugging Face checkpoint and its GGUF
    conversion line up; a leading prefix nobody knows ('net.') is tried away. Architectures
    gguf-py has no table for keep their module paths (see canonical())."""

    def __init__(self, arch: str, tensors: dict[str, TensorRef]) -> None:
        self.map: Any = None
        layers = 1 + max(
            (int(m.group(2)) for n in tensors if (m := _GENERIC_LAYER.match(n))), default=0
        )
        try:
            import gguf

            names = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
            arch = _ARCH_ALIASES.get(arch, arch)
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
            for head in _HEADS:
                found = self.map.get_name(head + rest, try_suffixes=(".weight", ".bias"))
                if found:
                    return str(found)
        return raw

    def apply(self, t: TensorRef) -> TensorRef:
        name = self.name(t.name)
        m = _STACK_LAYER.match(name)
        if m:  # a stack's prefix stays: T5's 'enc.blk.N' and 'dec.blk.N' are different layers
            role = f"{m.group(1)}blk.*.{m.group(3)}"
            return dataclasses.replace(t, role=role, layer=int(m.group(2)))
        role, layer = _generic(name)
        return dataclasses.replace(t, role=role, layer=layer)


def iter_float(model: Model) -> Iterator[TensorRef]:
    """Floating-point tensors with more than one element, in storage order."""
    for t in model.tensors.values():
        if t.floating and t.size > 1:
            yield t
