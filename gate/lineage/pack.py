"""Reference packs: what every lineage tier needs of a known base, at a fraction of its size.

A pack is one safetensors file (tensors in a safe container, never pickle). Its tensors are a
seeded sample of the base's rows, chosen exactly as a Hub sample is (gate/lineage/sampled.py:
tensors outside the layers whole, a seeded choice of layers within 0.5% of the weights and at
most 64 MB, ROWS rows of each matrix in RUNS runs, every column kept). Its `__metadata__` holds
one JSON document (schemas/pack.v1.schema.json): the weight files' SHA-256s (the exact tier),
the configuration, vocabulary and shape signature (the structure tier and the index's
pre-filter), each tensor's role, layer, full shape and sampled rows (the aligned and
permutation-robust tiers, through sampled.Subset), and the pack's own provenance: source,
commit, tool version and a content digest.

The seed is taken from the weight files' SHA-256s, which the Hub lists for LFS files: a model
fingerprinted from a local folder and from `hf://owner/name@commit` gives the same content (same
rows, same bytes, same digest); only the provenance differs. A Hub source is read with range
requests (headers plus the sampled rows), never downloaded.

A pack is untrusted input when read: its size, header and metadata are bounded, the document is
validated against the schema and against the tensors it describes, and its content digest is
recomputed before any tier uses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gate import __version__, paths
from gate.errors import FormatError, GateError
from gate.formats import safetensors
from gate.lineage import sampled
from gate.lineage.models import Model, iter_float, model_files, open_model
from gate.lineage.tensors import TensorRef

if TYPE_CHECKING:
    import numpy as np

    from gate.hubclient import Hub, HubFile
    from gate.scanner import Scanner

SCHEMA = "provenance-gate/pack/v1"
META_KEY = "provenance_gate.pack"
SUFFIX = ".pack.safetensors"
MAX_PACK_BYTES = 160 << 20  # 64 MB of rows plus metadata (a large vocabulary) and margin
MAX_META_BYTES = 32 << 20
MAX_TENSORS = 50_000
RAW_DTYPES = ("F16", "BF16", "F32", "F64")  # sampled as stored; any other is decoded to F32
SIGNATURE_KEYS = ("hidden_size", "d_model", "n_embd", "dim")


class PackError(GateError):
    """A pack (or a source to fingerprint) that cannot be used, and why."""


@dataclasses.dataclass(frozen=True)
class Signature:
    """What the index's pre-filter compares without opening a pack (see index.py)."""

    model_type: str
    hidden: int | None
    layers: int
    vocab_size: int | None
    vocab_digest: str | None
    files: tuple[str, ...]  # sha256 of each weight file
    shapes: tuple[str, ...]  # 'role:AxB' of every floating tensor role

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "files": list(self.files), "shapes": list(self.shapes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Signature:
        return cls(
            str(d["model_type"]),
            d["hidden"],
            int(d["layers"]),
            d["vocab_size"],
            d["vocab_digest"],
            tuple(d["files"]),
            tuple(d["shapes"]),
        )


def signature(model: Model, file_digests: Sequence[str]) -> Signature:
    """The pre-filter's view of a model, from its headers, configuration and vocabulary."""
    floats = list(iter_float(model))
    full = {t.name: t.full_shape or t.shape for t in floats}
    embd = next((t for t in floats if t.role == "token_embd.weight"), None)
    hidden = next(
        (v for k in SIGNATURE_KEYS if isinstance(v := model.config.get(k), int)),
        full[embd.name][-1] if embd is not None else None,
    )
    vocab = model.vocab
    return Signature(
        model_type=str(model.config.get("model_type") or ""),
        hidden=hidden,
        layers=int(model.config.get("num_hidden_layers") or model.layers),
        vocab_size=len(vocab) if vocab else None,
        vocab_digest=vocab_digest(vocab) if vocab else None,
        files=tuple(sorted(set(file_digests))),
        shapes=tuple(sorted({f"{t.role}:{'x'.join(map(str, full[t.name]))}" for t in floats})),
    )


def vocab_digest(vocab: dict[str, int]) -> str:
    doc = json.dumps(sorted(vocab.items()), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(doc.encode("utf-8", "surrogatepass")).hexdigest()


@dataclasses.dataclass
class Pack:
    """A pack read and verified: its document and where its tensors are."""

    path: str
    doc: dict[str, Any]
    header: safetensors.Header
    sha256: str  # of the whole file

    @property
    def name(self) -> str:
        return str(self.doc["name"])

    @property
    def content_digest(self) -> str:
        return str(self.doc["provenance"]["content_digest"])

    @property
    def signature(self) -> Signature:
        return Signature.from_dict(self.doc["signature"])

    @property
    def source(self) -> str:
        return str(self.doc["provenance"]["source"])

    def open(self) -> sampled.Sample:
        """The pack as a sample of its base: a small model whose tensors carry their roles,
        layers and full shapes, and the rows each holds (for sampled.Subset)."""
        import numpy as np

        meta = self.doc["tensors"]
        tensors: dict[str, TensorRef] = {}
        rows: dict[str, np.ndarray | None] = {}
        for t in self.header.tensors:
            m = meta[t.name]
            tensors[t.name] = TensorRef(
                t.name,
                m["role"],
                m["layer"],
                t.shape,
                t.dtype,
                self.path,
                self.header.data_start + t.begin,
                t.end - t.begin,
                full_shape=tuple(m["full_shape"]),
            )
            rows[t.name] = None if m["rows"] is None else np.asarray(m["rows"], dtype=np.int64)
        model = Model(
            display=self.name,
            tensors=tensors,
            config=dict(self.doc["config"]),
            vocab=dict(self.doc["vocab"]) if self.doc["vocab"] is not None else None,
            adapter=None,
            quantization=None,
            problems=[],
        )
        counts = self.doc["counts"]
        return sampled.Sample(
            model=model,
            rows=rows,
            base_bytes=int(self.doc["weight_bytes"]),
            fetched=sum(t.end - t.begin for t in self.header.tensors),
            tensors=(counts["tensors"][0], counts["tensors"][1]),
            layers=(counts["layers"][0], counts["layers"][1]),
            folder=os.path.dirname(self.path),
        )


# ---------------------------------------------------------------------------- building


@dataclasses.dataclass
class _Source:
    """A model to fingerprint: its tensors (roles from canonical()), configuration, vocabulary,
    weight files (path -> sha256, size) and how to read rows of a tensor."""

    uri: str
    commit: str | None
    model: Model
    files: dict[str, tuple[str, int]]
    hub: Hub | None = None
    repo: str = ""
    hub_files: dict[str, HubFile] = dataclasses.field(default_factory=dict)

    def read(self, t: TensorRef, start: int, length: int) -> bytes:
        """length bytes of t's file from start (an absolute offset)."""
        if self.hub is not None and self.commit is not None:
            return self.hub.read_range(
                self.repo, self.commit, self.hub_files[t.file], start, length
            )
        return bytes(self.model.mapped(t.file)[start : start + length])


def local_source(path: str, scanner: Scanner) -> _Source:
    """A local model folder or weight file, in any format the lineage tiers read."""
    from gate import hashing
    from gate.lineage.models import ModelError

    try:
        files, _ = model_files(path, path)
        model = open_model(path)
    except ModelError as e:
        raise PackError(str(e), hint="pass a model folder or a weight file") from None
    if not list(iter_float(model)):
        model.close()
        problems = "; ".join(model.problems) or "no floating-point tensors"
        raise PackError(f"{path}: nothing to fingerprint: {problems}")
    scans = scanner.scan_many([os.path.realpath(f) for f in files])
    digests: dict[str, tuple[str, int]] = {}
    for f in files:
        scan = scans[os.path.realpath(f)]
        if not isinstance(scan, hashing.FileScan):
            model.close()
            raise PackError(f"{f}: cannot be read: {scan}")
        digests[os.path.basename(f)] = (scan.sha256, scan.size)
    return _Source(os.path.abspath(path), None, model, digests)


def hub_source(hub: Hub, repo: str, sha: str, folder: str) -> _Source:
    """A Hub model at a pinned commit: its safetensors headers (two range requests per file),
    configuration and vocabulary; rows are fetched later, only those sampled."""

    weights = [
        f for f in hub.files(repo, sha) if f.path.endswith(".safetensors") and "/" not in f.path
    ]
    if not weights:
        raise PackError(f"hf://{repo}@{sha[:12]} has no top-level safetensors files")
    if any(f.sha256 is None for f in weights):
        raise PackError(f"hf://{repo}@{sha[:12]}: a weight file is not stored with Git LFS")
    model = sampled.remote_model(hub, repo, sha, folder, weights, lambda f: f.path)
    files = {f.path: (str(f.sha256), f.size) for f in weights}
    return _Source(f"hf://{repo}@{sha}", sha, model, files, hub, repo, {f.path: f for f in weights})


def raw(t: TensorRef) -> bool:
    """Sampled as stored (the bytes a range request returns): plain float tensors."""
    packed = t.scale or t.affine or t.gptq or t.bnb4 or t.mlx or t.nbits
    return t.dtype in RAW_DTYPES and not t.transposed and packed is None


def _rows_of(t: TensorRef) -> int:
    return t.shape[0] if len(t.shape) >= 2 else 1


def _whole(t: TensorRef) -> bool:
    return t.nbytes <= sampled.WHOLE_BELOW or len(t.shape) < 2 or t.shape[0] <= sampled.ROWS


def _cost(t: TensorRef) -> int:
    per = t.nbytes // t.size if raw(t) else 4
    return t.size * per if _whole(t) else sampled.ROWS * (t.size // t.shape[0]) * per


def build(
    source: _Source, name: str
) -> tuple[list[tuple[str, str, list[int], bytes]], dict[str, Any]]:
    """The pack's tensors (name, dtype, shape, bytes) and its document, from a source."""

    model = source.model
    floats = [t for t in iter_float(model) if t.size > 1]
    seed = sampled.seed_of([sha for sha, _ in source.files.values()])
    weight_bytes = sum(size for _, size in source.files.values())
    chosen, layers = sampled.choose(
        floats,
        lambda t: None if t.layer is None else str(t.layer),
        _cost,
        seed,
        weight_bytes,
    )
    out: list[tuple[str, str, list[int], bytes]] = []
    meta: dict[str, Any] = {}
    jobs: list[tuple[TensorRef, np.ndarray | None]] = []
    for t in chosen:
        rows = None if _whole(t) else sampled.rows_for(_rows_of(t), seed)
        jobs.append((t, rows))
    if source.hub is not None:
        from concurrent.futures import ThreadPoolExecutor  # only for ranged reads

        with ThreadPoolExecutor(sampled.FETCH_THREADS) as pool:
            datas = list(pool.map(lambda j: take(source, j[0], j[1]), jobs))
    else:
        datas = [take(source, t, rows) for t, rows in jobs]
    for (t, rows), (dtype, data) in zip(jobs, datas, strict=True):
        shape = list(t.shape) if rows is None else [len(rows), *t.shape[1:]]
        out.append((t.name, dtype, shape, data))
        meta[t.name] = {
            "role": t.role,
            "layer": t.layer,
            "full_shape": list(t.shape),
            "rows": None if rows is None else [int(r) for r in rows],
            "source_dtype": t.dtype,
        }
    sig = signature(model, [sha for sha, _ in source.files.values()])
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "name": name,
        "seed": seed,
        "weight_bytes": weight_bytes,
        "files": [
            {"path": p, "sha256": sha, "size": size}
            for p, (sha, size) in sorted(source.files.items())
        ],
        "config": _plain_config(model.config),
        "vocab": model.vocab,
        "signature": sig.as_dict(),
        "counts": {
            "tensors": [len(chosen), len(floats)],
            "layers": [len(layers), len({t.layer for t in floats if t.layer is not None})],
        },
        "tensors": meta,
    }
    digest = content_digest(doc, b"".join(d for *_, d in out))
    doc["provenance"] = {
        "source": source.uri,
        "commit": source.commit,
        "tool": "provenance-gate",
        "tool_version": __version__,
        "content_digest": digest,
    }
    return out, doc


def take(source: _Source, t: TensorRef, rows: np.ndarray | None) -> tuple[str, bytes]:
    """The sampled rows of t: as stored when plain, else decoded to float32 (local only)."""
    import numpy as np

    if raw(t):
        if rows is None:
            return t.dtype, source.read(t, t.offset, t.nbytes)
        row_bytes = t.nbytes // t.shape[0]
        parts, start, prev = [], int(rows[0]), int(rows[0])
        for r in [int(x) for x in rows[1:]] + [-1]:  # one read per contiguous run
            if r != prev + 1:
                parts.append(
                    source.read(t, t.offset + start * row_bytes, (prev - start + 1) * row_bytes)
                )
                start = r
            prev = r
        return t.dtype, b"".join(parts)
    values = source.model.array(t, rows)
    return "F32", np.ascontiguousarray(values, dtype=np.float32).tobytes()


def _plain_config(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration as JSON would keep it (a GGUF's metadata may hold other types)."""
    return dict(json.loads(json.dumps(config, default=str)))


def content_digest(doc: dict[str, Any], data: bytes) -> str:
    """sha256 over the document (without its name and provenance) and the tensor bytes: equal
    for equal content, whichever source, name and tool version wrote the pack."""
    body = {k: v for k, v in doc.items() if k not in ("name", "provenance")}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    h = hashlib.sha256(text.encode("utf-8", "surrogatepass"))
    h.update(b"\0")
    h.update(data)
    return "sha256:" + h.hexdigest()


def write(path: str, tensors: list[tuple[str, str, list[int], bytes]], doc: dict[str, Any]) -> None:
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    tmp = path + ".tmp"
    try:
        sampled.write_safetensors(tmp, tensors, {META_KEY: text})
        os.replace(tmp, path)
    except OSError as e:
        raise PackError(f"cannot write the pack: {e.strerror}", where=path) from None


def fingerprint(
    source: str,
    out: str,
    *,
    scanner: Scanner,
    hub: Hub | None = None,
    name: str | None = None,
    uri: str | None = None,
) -> Pack:
    """Build the pack of a local model or `hf://owner/name@revision`, write it to out, and read
    it back (so what was written is what any reader will verify). uri: the source as the pack's
    provenance names it (default: the Hub URI at its commit, or the local path)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="provenance-gate-pack-") as workdir:
        if source.startswith("hf://"):
            from gate import hubclient, hubmodels

            match = hubmodels.HF_URI.match(source)
            if match is None or not hubclient.REPO_ID.match(match["repo"]) or hub is None:
                raise PackError(
                    f"not a Hub model: {source!r}", hint="write hf://owner/name@revision"
                )
            try:
                sha = hub.resolve(match["repo"], match["rev"])
                src = hub_source(hub, match["repo"], sha, workdir)
            except hubclient.HubError as e:
                raise PackError(f"{source}: {e.message}", hint=e.hint) from None
            default = match["repo"]
        else:
            src = local_source(source, scanner)
            default = os.path.basename(os.path.normpath(source))
        if uri is not None:
            src.uri = uri
        try:
            tensors, doc = build(src, name or default)
        except (OSError, FormatError) as e:
            raise PackError(f"{source}: {e}") from None
        finally:
            src.model.close()
        write(out, tensors, doc)
    return read(out)


# ---------------------------------------------------------------------------- reading


def read(path: str, sha256: str | None = None) -> Pack:
    """Read a pack and verify it: bounded size, then (given sha256) the file's digest before any
    parsing, a strict header, the schema, the document against the tensors, and the content
    digest. One read of the file. PackError says what is wrong."""
    try:
        with paths.open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_PACK_BYTES:
                raise PackError(
                    f"{size} bytes, over the {MAX_PACK_BYTES}-byte cap for a pack", where=path
                )
            data = f.read()
    except OSError as e:
        raise PackError(f"cannot read the pack: {e.strerror}", where=path) from None
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise PackError(f"sha256 {digest}, the index says {sha256}", where=path)
    try:
        n = safetensors.header_length(data[:8], len(data))
        header = safetensors.parse_header(data[8 : 8 + n], len(data))
    except FormatError as e:
        raise PackError(f"not a pack: {e}", where=path) from None
    text = header.metadata.get(META_KEY)
    if text is None:
        raise PackError(f"not a pack: no `{META_KEY}` metadata", where=path)
    if len(text) > MAX_META_BYTES:
        raise PackError(f"pack metadata over {MAX_META_BYTES} bytes", where=path)
    try:
        doc = safetensors.strict_json(text, max_objects=4 * MAX_TENSORS + 64)
    except (FormatError, RecursionError) as e:
        raise PackError(f"pack metadata is not valid JSON: {e}", where=path) from None
    problem = _schema_problem(doc) or _consistency_problem(doc, header)
    if problem:
        raise PackError(problem, where=path)
    if content_digest(doc, data[header.data_start :]) != doc["provenance"]["content_digest"]:
        raise PackError(
            "content digest mismatch: the pack was altered after it was written", where=path
        )
    return Pack(path, doc, header, digest)


def _schema_problem(doc: Any) -> str | None:
    import jsonschema

    from gate.manifest import schema

    vocab = doc.get("vocab") if isinstance(doc, dict) else None
    if isinstance(vocab, dict):  # checked here: jsonschema takes seconds over 150k tokens
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in vocab.values()):
            return (
                "pack metadata does not match its schema at `vocab`: a token id is not an integer"
            )
        doc = {**doc, "vocab": {}}
    try:
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(schema("pack.v1.schema.json")).iter_errors(doc)
        )
    except RecursionError:
        return "pack metadata is nested too deeply"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"pack metadata does not match its schema at `{where}`: {error.message}"


def _consistency_problem(doc: dict[str, Any], header: safetensors.Header) -> str | None:
    """The document must describe exactly the tensors stored, with rows that fit them."""
    meta = doc["tensors"]
    names = {t.name for t in header.tensors}
    if names != set(meta):
        odd = sorted(names ^ set(meta))[:3]
        return f"the metadata and the stored tensors disagree: {', '.join(odd)}"
    for t in header.tensors:
        m = meta[t.name]
        full, rows = m["full_shape"], m["rows"]
        if t.dtype not in RAW_DTYPES:
            return f"tensor {t.name}: dtype {t.dtype} is not a pack dtype"
        if rows is None:
            if list(t.shape) != full:
                return f"tensor {t.name}: stored whole as {list(t.shape)}, but full shape {full}"
            continue
        if len(full) < 2 or list(t.shape) != [len(rows), *full[1:]]:
            return (
                f"tensor {t.name}: shape {list(t.shape)} does not hold {len(rows)} rows of {full}"
            )
        if any(b <= a for a, b in itertools.pairwise(rows)) or rows[-1] >= full[0]:
            return f"tensor {t.name}: sampled rows are not increasing within {full[0]}"
    return None
