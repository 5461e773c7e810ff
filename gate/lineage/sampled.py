"""Lineage against a Hub base without downloading it: a deterministic sample of its rows.

The base's safetensors headers are read with range requests; a seeded choice of layers (and
every tensor outside the layers: embeddings, final norm, output) is kept within a byte budget;
of each kept matrix, ROWS rows in RUNS contiguous runs are fetched. The candidate (and any local
reference) is then cut to the very same rows, so the ordinary engine (relation.compare) compares
like with like. The seed is the pinned revision(s): the same commit always gives the same sample,
and a changed base gives a new one.

What a sample cannot show: a permuted derivative (its rows sit elsewhere), a depth-pruned one
(its layers are renumbered) or a vocabulary change (its token rows moved). Those need the base's
files locally: the Hugging Face cache is used whole when the base is in it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from gate.errors import FormatError
from gate.formats import safetensors
from gate.hubclient import Hub, HubError, HubFile
from gate.lineage.exact import FLOAT_DTYPES
from gate.lineage.models import Model, open_model, sample_rows
from gate.lineage.tensors import TensorRef

if TYPE_CHECKING:
    import numpy as np

ROWS = 32  # rows fetched per sampled matrix
RUNS = 4  # in this many contiguous runs (one range request each)
FRACTION = 0.005  # of the base's weight bytes, at most…
MAX_BYTES = 64 << 20  # …and never more than this
MIN_LAYERS = 2  # sampled whatever the budget, so a verdict always has evidence
WHOLE_BELOW = 64 << 10  # tensors this small (norms, biases) are fetched whole
MAX_TENSORS = 100_000
FETCH_THREADS = 4
_LAYER = re.compile(r"^.*?\.(\d+)\.")
T = TypeVar("T")
_SMALL_FILES = ("config.json", "tokenizer.json", "vocab.json")


@dataclasses.dataclass(frozen=True)
class _Remote:
    file: HubFile
    info: safetensors.TensorInfo
    data_start: int

    @property
    def offset(self) -> int:
        return self.data_start + self.info.begin

    @property
    def nbytes(self) -> int:
        return self.info.end - self.info.begin

    @property
    def n(self) -> int:
        return self.info.shape[0] if len(self.info.shape) >= 2 else 1


@dataclasses.dataclass
class Sample:
    """The fetched part of one base, as a small local model, and what it cost."""

    model: Model
    rows: dict[str, np.ndarray | None]  # tensor name -> row indices kept (None: whole tensor)
    base_bytes: int  # the base's weight files
    fetched: int  # bytes of weights read (network or range cache)
    tensors: tuple[int, int]  # sampled, total
    layers: tuple[int, int]  # sampled, total
    folder: str

    def summary(self) -> str:
        share = 100.0 * self.fetched / self.base_bytes if self.base_bytes else 0.0
        return (
            f"sampled {_size(self.fetched)} of {_size(self.base_bytes)} ({share:.2f}%):"
            f" {self.tensors[0]} of {self.tensors[1]} tensors, {self.layers[0]} of"
            f" {self.layers[1]} layers, at most {ROWS} rows each"
        )


def seed_of(shas: list[str]) -> int:
    """One seed for a comparison, from every pinned revision in it (parents of a merge must be
    sampled at the same rows)."""
    return int.from_bytes(hashlib.sha256("|".join(sorted(shas)).encode()).digest()[:8], "little")


def rows_for(n: int, seed: int) -> np.ndarray | None:
    """ROWS row indices of an n-row matrix in RUNS sorted runs (None: take them all)."""
    return sample_rows(n, ROWS, seed, RUNS)


def headers(hub: Hub, repo: str, sha: str, files: list[HubFile]) -> list[_Remote]:
    """Every tensor of the base's safetensors files, from two range requests per file."""
    out: list[_Remote] = []
    for f in files:
        n = safetensors.header_length(hub.read_range(repo, sha, f, 0, min(8, f.size)), f.size)
        header = safetensors.parse_header(hub.read_range(repo, sha, f, 8, n), f.size)
        out += [_Remote(f, t, header.data_start) for t in header.tensors]
        if len(out) > MAX_TENSORS:
            raise FormatError(f"more than {MAX_TENSORS} tensors")
    return out


def fetch(hub: Hub, repo: str, sha: str, seed: int, folder: str) -> Sample:
    """Fetch the sample of one pinned base into `folder` and open it."""
    listed = hub.files(repo, sha)
    weights = [f for f in listed if f.path.endswith(".safetensors") and "/" not in f.path]
    if not weights:
        raise HubError("invalid", f"{repo}@{sha[:12]} has no top-level safetensors files")
    tensors = [t for t in headers(hub, repo, sha, weights) if t.info.dtype in FLOAT_DTYPES]
    chosen, layers = choose(tensors, _layer, _cost, seed, sum(f.size for f in weights))
    rows = {t.info.name: (None if _whole(t) else rows_for(t.n, seed)) for t in chosen}
    from concurrent.futures import ThreadPoolExecutor  # only when a sample is fetched

    jobs = [(t, start, length) for t in chosen for start, length in _ranges(t, rows[t.info.name])]
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        parts = list(pool.map(lambda j: hub.read_range(repo, sha, j[0].file, j[1], j[2]), jobs))
    data: dict[str, bytearray] = {}
    for (t, _, _), part in zip(jobs, parts, strict=True):
        data.setdefault(t.info.name, bytearray()).extend(part)
    os.makedirs(folder, exist_ok=True)
    _write(os.path.join(folder, "sample.safetensors"), chosen, rows, data)
    small_files(hub, repo, sha, folder)
    model = open_model(folder, f"{repo}@{sha[:12]}")
    full = {t.info.name: t.info.shape for t in chosen}
    model.tensors = {
        n: dataclasses.replace(t, full_shape=full.get(n)) for n, t in model.tensors.items()
    }
    all_layers = {m.group(1) for t in tensors if (m := _LAYER.match(t.info.name))}
    return Sample(
        model=model,
        rows=rows,
        base_bytes=sum(f.size for f in weights),
        fetched=sum(len(p) for p in parts),
        tensors=(len(chosen), len(tensors)),
        layers=(len(layers), len(all_layers)),
        folder=folder,
    )


def header_model(hub: Hub, repo: str, sha: str, folder: str) -> Model:
    """The base's tensors with their full shapes and no data: all an unmerged adapter is checked
    against (its factors must fit the base's modules), from headers alone."""
    weights = [
        f for f in hub.files(repo, sha) if f.path.endswith(".safetensors") and "/" not in f.path
    ]
    return remote_model(hub, repo, sha, folder, weights, lambda f: f"hf://{repo}/{f.path}")


def remote_model(
    hub: Hub,
    repo: str,
    sha: str,
    folder: str,
    weights: list[HubFile],
    file_of: Callable[[HubFile], str],
) -> Model:
    """A Hub model's tensors from its safetensors headers (two range requests per file), with
    canonical roles, its configuration and vocabulary written to folder; no tensor data. Each
    tensor's `file` is file_of(its Hub file)."""
    from gate.lineage.models import canonical

    tensors = headers(hub, repo, sha, weights)
    os.makedirs(folder, exist_ok=True)
    small_files(hub, repo, sha, folder)
    model = open_model(folder, f"{repo}@{sha[:12]}")
    refs = {
        t.info.name: TensorRef(
            t.info.name,
            t.info.name,
            None,
            t.info.shape,
            t.info.dtype,
            file_of(t.file),
            t.offset,
            t.nbytes,
        )
        for t in tensors
    }
    model.tensors = canonical(str(model.config.get("model_type") or ""), refs)
    model.problems = [p for p in model.problems if "no readable" not in p]
    return model


def small_files(hub: Hub, repo: str, sha: str, folder: str) -> None:
    for name in _SMALL_FILES:
        small = hub.read_small(repo, sha, name)
        if small is not None:
            with open(os.path.join(folder, name), "wb") as fh:
                fh.write(small)


def _whole(t: _Remote) -> bool:
    return t.nbytes <= WHOLE_BELOW or len(t.info.shape) < 2 or t.n <= ROWS


def _cost(t: _Remote) -> int:
    return t.nbytes if _whole(t) else ROWS * (t.nbytes // t.n)


def choose(
    items: Sequence[T],
    layer: Callable[[T], str | None],
    cost: Callable[[T], int],
    seed: int,
    base_bytes: int,
) -> tuple[list[T], set[str]]:
    """Items outside the layers always; then whole layers in a seeded order while the budget
    (FRACTION of base_bytes, at most MAX_BYTES) lasts, at least MIN_LAYERS of them. Hub samples
    and reference packs (gate/lineage/pack.py) choose alike."""
    import numpy as np

    by_layer: dict[str, list[T]] = {}
    outside: list[T] = []
    for t in items:
        key = layer(t)
        (by_layer.setdefault(key, []) if key is not None else outside).append(t)
    budget = min(MAX_BYTES, int(FRACTION * base_bytes))
    chosen, spent = list(outside), sum(cost(t) for t in outside)
    order = sorted(by_layer, key=int)
    rng = np.random.default_rng(seed)
    # The first MIN_LAYERS draws come one from each contiguous band of depth, so a model stacked
    # from layer ranges of several parents (a passthrough merge) shows a layer of each range.
    bands = [b for b in np.array_split(np.arange(len(order)), MIN_LAYERS) if len(b)]
    first = [int(rng.choice(b)) for b in bands]
    rest = [int(i) for i in rng.permutation(len(order)) if int(i) not in first]
    layers: set[str] = set()
    for i in first + rest:
        group = by_layer[order[i]]
        price = sum(cost(t) for t in group)
        if len(layers) >= MIN_LAYERS and spent + price > budget:
            break
        chosen += group
        spent += price
        layers.add(order[i])
    return chosen, layers


def _layer(t: _Remote) -> str | None:
    m = _LAYER.match(t.info.name)
    return m.group(1) if m else None


def _ranges(t: _Remote, rows: np.ndarray | None) -> list[tuple[int, int]]:
    if rows is None:
        return [(t.offset, t.nbytes)]
    row_bytes = t.nbytes // t.n
    out: list[tuple[int, int]] = []
    run_start = prev = int(rows[0])
    for r in [int(x) for x in rows[1:]] + [-1]:
        if r != prev + 1:
            out.append((t.offset + run_start * row_bytes, (prev - run_start + 1) * row_bytes))
            run_start = r
        prev = r
    return out


def write_safetensors(
    path: str,
    tensors: Sequence[tuple[str, str, Sequence[int], bytes | bytearray]],
    metadata: dict[str, str] | None = None,
) -> None:
    """(name, dtype, shape, bytes) as a safetensors file. Written here rather than through
    safetensors.numpy: the bytes are fetched rows in their stored dtype (bf16 included), which
    need no decoding to be written back."""
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _, _, _, data in tensors:
            f.write(data)


def _write(
    path: str,
    chosen: list[_Remote],
    rows: dict[str, np.ndarray | None],
    data: dict[str, bytearray],
) -> None:
    """The sample as a safetensors file: each tensor keeps its name, dtype and columns."""
    out = []
    for t in chosen:
        idx = rows[t.info.name]
        shape = list(t.info.shape) if idx is None else [len(idx), *t.info.shape[1:]]
        out.append((t.info.name, t.info.dtype, shape, data[t.info.name]))
    write_safetensors(path, out)


def _by_shape(
    inner: Model, sample: Sample, want: dict[tuple[str, int | None], TensorRef]
) -> dict[str, TensorRef]:
    """Candidate tensors of roles the sample does not have, paired with sampled tensors of roles
    the candidate does not have, when they are the only two of their full shape (and layer
    index, else of their shape alone): the same weights under another exporter's names (an
    ONNX graph's inlined branches, `conv1` for `encoder.0.reparam_conv`). Each comes back
    carrying the sampled tensor's role and layer. A role both sides have is never re-paired
    (a depth-pruned model's layers are matched by the layer map, not by shape)."""
    mine_roles = {t.role for t in inner.tensors.values()}
    their_roles = {role for role, _ in want}
    spare = [s for (role, _), s in want.items() if role not in mine_roles]
    loose = [
        t for t in inner.tensors.values() if t.role not in their_roles and t.floating and t.size > 1
    ]
    out: dict[str, TensorRef] = {}
    for keyed in (lambda shape, layer: (shape, layer), lambda shape, layer: (shape, None)):
        left = [s for s in spare if all(s.role != t.role for t in out.values())]
        free = [t for t in loose if t.name not in out]
        theirs: dict[Any, list[TensorRef]] = {}
        for s in left:
            theirs.setdefault(keyed(s.full_shape or s.shape, s.layer), []).append(s)
        mine: dict[Any, list[TensorRef]] = {}
        for t in free:
            mine.setdefault(keyed(t.shape, t.layer), []).append(t)
        for key, found in theirs.items():
            if len(found) == 1 and len(mine.get(key, ())) == 1:
                t = mine[key][0]
                out[t.name] = dataclasses.replace(t, role=found[0].role, layer=found[0].layer)
    return out


class Subset(Model):
    """A model cut to the rows of a sample: only tensors that pair (same role, layer and full
    shape) with a sampled tensor, and only the sampled rows of each."""

    def __init__(self, inner: Model, sample: Sample) -> None:
        want = {(t.role, t.layer): t for t in sample.model.tensors.values()}
        self.inner = inner
        self.index: dict[str, np.ndarray | None] = {}
        # role -> (candidate shape, base shape) where the two differ: pruned width or a changed
        # vocabulary; such tensors cannot be compared row for row, so they are left out
        self.reshaped: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        kept: dict[str, TensorRef] = {}
        renamed = _by_shape(inner, sample, want)
        for name, t in inner.tensors.items():
            if name in renamed:  # named otherwise (another exporter): paired by shape
                t = renamed[name]
            s = want.get((t.role, t.layer))
            if s is not None and (s.full_shape or s.shape) != t.shape:
                self.reshaped[t.role] = (t.shape, s.full_shape or s.shape)
            if s is None or (s.full_shape or s.shape) != t.shape:
                continue
            idx = sample.rows.get(s.name)
            self.index[name] = idx
            if idx is None:
                kept[name] = dataclasses.replace(t, full_shape=t.shape)
            else:
                nbytes = len(idx) * (t.nbytes // t.shape[0])
                shape = (len(idx), *t.shape[1:])
                kept[name] = dataclasses.replace(t, shape=shape, nbytes=nbytes, full_shape=t.shape)
        super().__init__(
            display=inner.display,
            tensors=kept,
            config=inner.config,
            vocab=inner.vocab,
            adapter=inner.adapter,
            quantization=inner.quantization,
            problems=inner.problems,
        )

    def array(
        self, t: TensorRef, rows: np.ndarray | None = None, cols: np.ndarray | None = None
    ) -> np.ndarray:
        idx = self.index[t.name]
        pick = idx if rows is None else (rows if idx is None else idx[rows])
        return self.inner.array(self.inner.tensors[t.name], pick, cols)

    def stored(self, t: TensorRef) -> np.ndarray:
        """The sampled rows' values as stored, in the shape shown (a matrix stored transposed,
        an ONNX MatMul weight, gives its columns)."""
        view = self.inner.stored(self.inner.tensors[t.name])
        idx = self.index[t.name]
        return view if idx is None else view[idx]

    def raw(self, t: TensorRef) -> memoryview:
        inner_t = self.inner.tensors[t.name]
        idx = self.index[t.name]
        if inner_t.transposed:  # the shown rows are not the file's: their values, row by row
            return memoryview(self.stored(t).tobytes())
        if idx is None:
            return self.inner.raw(inner_t)
        row_bytes = inner_t.nbytes // inner_t.shape[0]
        with self.inner.raw(inner_t) as whole:
            return memoryview(
                b"".join(bytes(whole[i * row_bytes : (i + 1) * row_bytes]) for i in idx)
            )

    def release(self, t: TensorRef, start: int = 0, length: int | None = None) -> None:
        return None  # the rows are scattered; the inner model's mapping is dropped on close

    def close(self) -> None:
        self.inner.close()


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
