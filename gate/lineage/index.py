"""An index of reference packs: a folder of packs and `index.json`, their signatures.

The signatures let a lookup skip every pack that cannot be a candidate's base without opening
it. A pack is shortlisted when it shares a weight file's SHA-256 with the candidate (a copy), its
vocabulary (same tokens, same ids), or at least MIN_SHAPE_SHARE of its tensor roles with the same
shapes (a fine-tune, a re-ordering, a quantization, a depth pruning keep them), or half of its
distinct shapes whatever the names (another exporter's names for the same weights). The signatures
are looked up through inverted maps, so the work of a lookup grows with the packs that share
something with the candidate, not with the index (bench/identify.py measures it).

`index.json` (schemas/index.v1.schema.json) is untrusted input like a pack: bounded, strict
JSON, schema-validated; every pack path stays inside the index folder, and a pack is opened only
after its size and SHA-256 match its entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from gate.errors import FormatError
from gate.formats import safetensors
from gate.lineage import pack
from gate.lineage.pack import PackError, Signature

SCHEMA = "provenance-gate/index/v1"
INDEX_FILE = "index.json"
MAX_INDEX_BYTES = 256 << 20
MAX_PACKS = 100_000
MIN_SHAPE_SHARE = 0.25
MIN_DISTINCT_SHAPES = 4  # fewer role-free shapes than this say too little to shortlist on
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One pack of an index, as index.json describes it."""

    root: str  # the index folder
    file: str  # relative to root
    sha256: str
    size: int
    name: str
    source: str
    content_digest: str
    signature: Signature

    @property
    def path(self) -> str:
        return os.path.join(self.root, self.file)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "size": self.size,
            "name": self.name,
            "source": self.source,
            "content_digest": self.content_digest,
            "signature": self.signature.as_dict(),
        }

    def open(self) -> pack.Pack:
        """The pack, once its file is inside the index folder with the recorded size and hash."""
        real = os.path.realpath(self.path)
        if not real.startswith(os.path.realpath(self.root) + os.sep):
            raise PackError(f"{self.file}: outside the index folder", where=self.root)
        try:
            size = os.path.getsize(real)
        except OSError as e:
            raise PackError(f"{self.file}: {e.strerror}", where=self.root) from None
        if size != self.size:
            raise PackError(
                f"{self.file}: {size} bytes, the index says {self.size}", where=self.root
            )
        try:  # the digest is checked before the pack is parsed
            got = pack.read(real, self.sha256)
        except PackError as e:
            raise PackError(f"{self.file}: {e.message}", where=self.root) from None
        if got.content_digest != self.content_digest:
            raise PackError(
                f"{self.file}: content digest differs from the index's", where=self.root
            )
        return got


@dataclasses.dataclass
class Index:
    root: str
    entries: list[Entry]

    def write(self) -> None:
        from gate.paths import atomic_write

        doc = {"schema": SCHEMA, "packs": [e.as_dict() for e in self.entries]}
        try:
            atomic_write(os.path.join(self.root, INDEX_FILE), json.dumps(doc, indent=1) + "\n")
        except OSError as e:
            raise PackError(f"cannot write the index: {e.strerror}", where=self.root) from None


HF_INDEX = re.compile(
    r"^hf://datasets/(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)"
    r"@(?P<rev>[0-9a-f]{40})$"
)
_DONE = ".provenance-gate-complete"


def is_hub_index(spec: str) -> bool:
    return spec.startswith("hf://")


def hub_index(uri: str, cache_dir: str, offline: bool = False) -> str:
    """The local folder of an index published as a Hub dataset, `hf://datasets/owner/name@<full
    commit sha>` (the commit pins every file, so a copy once fetched is used as is, offline
    too): index.json and the packs it lists, fetched with huggingface_hub into the gate's
    cache. Every pack is still verified against index.json when it is opened."""
    match = HF_INDEX.match(uri)
    if match is None or ".." in match["repo"]:
        raise PackError(
            f"not a Hub index: {uri!r}", hint="write hf://datasets/owner/name@<full commit sha>"
        )
    folder = os.path.join(cache_dir, "indexes", *match["repo"].split("/"), match["rev"])
    if os.path.exists(os.path.join(folder, _DONE)):
        return folder
    if offline:
        raise PackError(f"{uri}: not in the cache, and offline", hint="run once online")
    try:
        import huggingface_hub
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:
        raise PackError(
            "Hub indexes need huggingface_hub", hint="pip install the `hub` extra"
        ) from None
    from gate.settings import Settings

    disable_progress_bars()  # the gate's output is its report
    try:
        huggingface_hub.snapshot_download(
            match["repo"],
            repo_type="dataset",
            revision=match["rev"],
            endpoint=Settings.from_environment(cache_dir=cache_dir).hub_endpoint,
            local_dir=folder,
            allow_patterns=[INDEX_FILE, f"*{pack.SUFFIX}"],
        )
    except Exception as e:  # the library's HTTP, offline and not-found errors alike
        raise PackError(f"{uri}: cannot fetch the index ({type(e).__name__}: {e})"[:400]) from None
    load(folder)  # refuse a malformed index before marking it complete
    with open(os.path.join(folder, _DONE), "w") as f:
        f.write(uri + "\n")
    return folder


def bundled() -> str:
    """The folder of the index shipped with the gate (docs/identify.md lists its packs)."""
    from importlib import resources

    return str(resources.files("gate").joinpath("data", "index"))


def load(path: str, create: bool = False) -> Index:
    """An index from its folder (or its index.json); create: an empty one for a new folder."""
    root = os.path.dirname(path) if os.path.basename(path) == INDEX_FILE else path
    file = os.path.join(root, INDEX_FILE)
    if not os.path.exists(file):
        if create:
            os.makedirs(root, exist_ok=True)
            return Index(root, [])
        raise PackError("no index.json: not a pack index", where=root)
    try:
        size = os.path.getsize(file)
        if size > MAX_INDEX_BYTES:
            raise PackError(f"{size} bytes, over the {MAX_INDEX_BYTES}-byte cap", where=file)
        with open(file, "rb") as f:
            text = f.read().decode("utf-8")
        doc = safetensors.strict_json(text, max_objects=4 * MAX_PACKS + 8)
    except (FormatError, UnicodeDecodeError) as e:
        raise PackError(f"not a valid index: {e}", where=file) from None
    except OSError as e:
        raise PackError(f"cannot read the index: {e.strerror}", where=file) from None
    problem = _schema_problem(doc)
    if problem:
        raise PackError(problem, where=file)
    entries = []
    for i, d in enumerate(doc["packs"]):
        rel = d["file"]
        if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
            raise PackError(f"packs[{i}].file {rel!r} leaves the index folder", where=file)
        entries.append(
            Entry(
                root,
                rel,
                d["sha256"],
                d["size"],
                d["name"],
                d["source"],
                d["content_digest"],
                Signature.from_dict(d["signature"]),
            )
        )
    return Index(root, entries)


def _schema_problem(doc: Any) -> str | None:
    import jsonschema

    from gate.manifest import schema

    try:
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(schema("index.v1.schema.json")).iter_errors(doc)
        )
    except RecursionError:
        return "index is nested too deeply"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"index does not match its schema at `{where}`: {error.message}"


def add(root: str, packs: Sequence[str]) -> tuple[Index, list[Entry]]:
    """Verify each pack, copy it into the index folder (unless it is there already) and record
    it; a pack with the content of one already indexed replaces it."""
    import shutil

    index = load(root, create=True)
    added = []
    for path in packs:
        got = pack.read(path)
        inside = os.path.realpath(path).startswith(os.path.realpath(index.root) + os.sep)
        if inside:
            rel = os.path.relpath(os.path.realpath(path), os.path.realpath(index.root))
        else:
            rel = f"{_SAFE.sub('_', got.name).strip('._') or 'pack'}-{got.content_digest[7:19]}"
            rel += pack.SUFFIX
            try:
                shutil.copyfile(path, os.path.join(index.root, rel))
            except OSError as e:
                raise PackError(f"cannot copy the pack: {e.strerror}", where=path) from None
        entry = Entry(
            index.root,
            rel.replace(os.sep, "/"),
            got.sha256,
            os.path.getsize(path),
            got.name,
            got.source,
            got.content_digest,
            got.signature,
        )
        index.entries = [
            e
            for e in index.entries
            if e.content_digest != entry.content_digest and e.file != entry.file
        ]
        index.entries.append(entry)
        added.append(entry)
    if len(index.entries) > MAX_PACKS:
        raise PackError(f"more than {MAX_PACKS} packs in one index", where=index.root)
    index.write()
    return index, added


def verify(index: Index) -> list[str]:
    """Every pack present, unaltered and described truly by its entry; packs in the folder the
    index does not list. One line per problem (none: the index is sound)."""
    problems = []
    for e in index.entries:
        try:
            got = e.open()
        except PackError as err:
            problems.append(str(err))
            continue
        if got.signature != e.signature:
            problems.append(f"{e.file}: the index's signature differs from the pack's")
    listed = {os.path.normpath(e.file) for e in index.entries}
    for dirpath, _, files in os.walk(index.root):
        for f in files:
            rel = os.path.normpath(os.path.relpath(os.path.join(dirpath, f), index.root))
            if f.endswith(pack.SUFFIX) and rel not in listed:
                problems.append(f"{rel}: a pack the index does not list")
    return problems


def shortlist(entries: Iterable[Entry], cand: Signature) -> list[Entry]:
    """The entries that may be the candidate's base (see the module docstring), found through
    inverted maps of the signatures."""
    by_file: dict[str, list[int]] = {}
    by_vocab: dict[str, list[int]] = {}
    by_shape: dict[str, list[int]] = {}
    by_dims: dict[str, list[int]] = {}
    distinct: list[int] = []
    listed = list(entries)
    for i, e in enumerate(listed):
        for f in e.signature.files:
            by_file.setdefault(f, []).append(i)
        if e.signature.vocab_digest:
            by_vocab.setdefault(e.signature.vocab_digest, []).append(i)
        for s in e.signature.shapes:
            by_shape.setdefault(s, []).append(i)
        dims = {_dims(s) for s in e.signature.shapes}
        distinct.append(len(dims))
        for d in dims:
            by_dims.setdefault(d, []).append(i)
    keep: set[int] = set()
    for f in cand.files:
        keep.update(by_file.get(f, ()))
    if cand.vocab_digest:
        keep.update(by_vocab.get(cand.vocab_digest, ()))
    shared: dict[int, int] = {}
    for s in cand.shapes:
        for i in by_shape.get(s, ()):
            shared[i] = shared.get(i, 0) + 1
    keep.update(
        i for i, n in shared.items() if n >= MIN_SHAPE_SHARE * len(listed[i].signature.shapes)
    )
    # the same shapes under other names (another exporter): half of the role-free shapes
    common: dict[int, int] = {}
    for d in {_dims(s) for s in cand.shapes}:
        for i in by_dims.get(d, ()):
            common[i] = common.get(i, 0) + 1
    keep.update(
        i for i, n in common.items() if distinct[i] >= MIN_DISTINCT_SHAPES and 2 * n >= distinct[i]
    )
    return [listed[i] for i in sorted(keep)]


def _dims(entry: str) -> str:
    return entry.rpartition(":")[2]


def digest(entries: Iterable[Entry]) -> str:
    """One digest of an index's content (the packs' content digests, sorted)."""
    return hashlib.sha256("\n".join(sorted(e.content_digest for e in entries)).encode()).hexdigest()
