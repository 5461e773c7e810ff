"""The lineage verdict cache: verdicts of the weight tiers, keyed by what they were computed from.

A warm check of an unchanged repository with a local base would otherwise re-read both models
and import numpy and scipy on every run. The key is the content of everything the comparison
reads (the SHA-256 of every weight file, from the stat cache; the bytes of config, tokenizer and
adapter files), the references' names, the significance level, and a digest of the gate's own
source and calibration, so a changed file, a new release or an edited checkout computes afresh.
Rows live in the stat cache's `memo` table (the same integrity check, the same threat model:
whoever can write the cache directory can make the gate skip work; see gate/cache.py).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import blake3

from gate import hashing, paths
from gate.lineage.models import META_FILES, ModelError, model_files
from gate.lineage.result import Verdict
from gate.lineage.tensors import MAX_JSON_BYTES

if TYPE_CHECKING:
    from gate.cache import StatCache
    from gate.scanner import Scanner

KIND = "lineage-verdicts-v1"


def key(
    candidate: Sequence[str],
    folder: str,
    references: Sequence[tuple[str, str | None]],
    scanner: Scanner,
    alpha: float,
) -> bytes | None:
    """The identity of one comparison: the candidate's weight files (real paths) and folder,
    and each reference as (name, real path or None when it could not be resolved). None: some
    file could not be read, so nothing is cached."""
    cand = identity(list(candidate), folder, scanner)
    if cand is None:
        return None
    refs: list[Any] = []
    for name, real in references:
        if real is None:
            refs.append([name, "unresolved"])
            continue
        try:
            files, ref_folder = model_files(real, name)
        except ModelError as e:
            refs.append([name, f"unopenable: {e}"])
            continue
        ref = identity(files, ref_folder, scanner)
        if ref is None:
            return None
        refs.append([name, ref])
    doc = {"code": code_digest(), "alpha": alpha, "candidate": cand, "references": refs}
    return json.dumps(doc, sort_keys=True).encode()


def load(cache: StatCache | None, data: bytes | None) -> list[Verdict | None] | None:
    """The verdicts stored for this key, or None (a miss, or a row that does not decode)."""
    if cache is None or data is None:
        return None
    payload = cache.memo_get(KIND, data)
    if payload is None:
        return None
    try:
        doc = json.loads(payload)
        if not isinstance(doc, list):
            return None
        return [None if v is None else Verdict.from_dict(v) for v in doc]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def store(cache: StatCache | None, data: bytes | None, verdicts: Sequence[Verdict | None]) -> None:
    if cache is None or data is None:
        return
    doc = [None if v is None else v.as_dict() for v in verdicts]
    cache.memo_put(KIND, data, json.dumps(doc))


def identity(files: list[str], folder: str, scanner: Scanner) -> dict[str, Any] | None:
    scans = scanner.scan_many(files)
    weights = []
    for real in sorted(files):
        scan = scans[real]
        if not isinstance(scan, hashing.FileScan) or scan.changed:
            return None
        weights.append([os.path.relpath(real, folder), scan.sha256])
    return {"weights": weights, "meta": meta_identity(folder)}


def meta_identity(folder: str) -> dict[str, str | None]:
    """The configuration, tokenizer and adapter files open_files would read beside weights."""
    return {n: _small(os.path.join(folder, n)) for n in META_FILES}


def _small(path: str) -> str | None:
    """BLAKE3 of a configuration file as open_files reads it (capped), None when absent."""
    try:
        with paths.open_regular(path) as f:
            return blake3.blake3(paths.read_capped(f, MAX_JSON_BYTES)).hexdigest()
    except OSError:
        return None


@functools.cache
def code_digest() -> str:
    """The gate's source and data files: a changed reader, test or calibration is a new key."""
    h = blake3.blake3()
    root = resources.files("gate")
    prefix = len(str(root))
    stack = [root]
    found = []
    while stack:
        node = stack.pop()
        for child in node.iterdir():
            if child.is_dir():
                if child.name != "__pycache__":
                    stack.append(child)
            elif child.name.endswith((".py", ".json")):
                found.append(child)
    for child in sorted(found, key=lambda c: str(c)):
        h.update(str(child)[prefix:].encode() + b"\0" + child.read_bytes() + b"\0")
    return h.hexdigest()
