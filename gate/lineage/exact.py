"""Tier 0: name-independent exact matches between a candidate's tensors and a reference's.

A bit-identical, non-constant floating-point tensor does not arise by chance in independently
trained models, so one such match is already evidence of copying. Constant tensors (zero
biases, unit norms), deterministic buffers (rotary frequencies, position ids) and position
tables computed by a formula (Whisper's sinusoids: hashing.Columns) do match across unrelated
models and are therefore never counted.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable

from gate import hashing, paths
from gate.formats import registry, safetensors
from gate.scanner import Scanner

FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64", "F8_E5M2", "F8_E4M3"})
BUFFER_NAMES = ("inv_freq", "position_ids", "attn.bias", "attn.masked_bias", "num_batches_tracked")
MAX_PAIRS = 20


def informative(t: hashing.TensorDigest) -> bool:
    """Whether an exact match of this tensor is evidence of shared weights."""
    return (
        t.dtype in FLOAT_DTYPES
        and not t.constant
        and math.prod(t.shape) > 1
        and not t.name.endswith(BUFFER_NAMES)
        and not t.formula
    )


def nbytes(t: hashing.TensorDigest) -> int:
    return math.prod(t.shape) * safetensors.DTYPE_BITS[t.dtype] // 8


@dataclasses.dataclass(frozen=True)
class ExactEvidence:
    """How many of the candidate's informative tensors are bit-identical to the reference's."""

    reference: str
    candidate_tensors: int  # informative tensors of the candidate
    matched: int
    candidate_bytes: int
    matched_bytes: int
    renamed: int  # matches stored under a different name
    pairs: tuple[tuple[str, str], ...]  # (candidate name, reference name), first MAX_PAIRS
    names: frozenset[str] = frozenset()  # every matched candidate tensor

    @property
    def all_matched(self) -> bool:
        return self.candidate_tensors > 0 and self.matched == self.candidate_tensors

    def summary(self) -> str:
        share = 100.0 * self.matched_bytes / self.candidate_bytes if self.candidate_bytes else 0.0
        text = (
            f"{self.matched} of {self.candidate_tensors} weight tensors ({share:.1f}% of weight"
            f" bytes) are bit-identical to {self.reference}"
        )
        if self.renamed:
            text += f" ({self.renamed} stored under other names)"
        return text

    def detail_lines(self) -> tuple[str, ...]:
        lines = tuple(
            f"{c} == {self.reference}:{r}" if c != r else f"{c} == {self.reference}:(same name)"
            for c, r in self.pairs
        )
        if self.matched > len(self.pairs):
            lines += (f"... and {self.matched - len(self.pairs)} more",)
        return lines


def compare(
    candidate: Iterable[hashing.TensorDigest],
    reference: Iterable[hashing.TensorDigest],
    reference_name: str,
) -> ExactEvidence:
    """Match candidate tensors to reference tensors by content digest, ignoring names."""
    by_digest: dict[str, str] = {}
    for t in reference:
        if informative(t):
            by_digest.setdefault(t.digest, t.name)
    total = matched = total_bytes = matched_bytes = renamed = 0
    pairs: list[tuple[str, str]] = []
    names: set[str] = set()
    for t in candidate:
        if not informative(t):
            continue
        total += 1
        total_bytes += nbytes(t)
        ref = by_digest.get(t.digest)
        if ref is None:
            continue
        matched += 1
        names.add(t.name)
        matched_bytes += nbytes(t)
        renamed += ref != t.name
        if len(pairs) < MAX_PAIRS:
            pairs.append((t.name, ref))
    return ExactEvidence(
        reference_name,
        total,
        matched,
        total_bytes,
        matched_bytes,
        renamed,
        tuple(pairs),
        frozenset(names),
    )


def _files(root: str, rel: str, suffixes: tuple[str, ...]) -> tuple[str, list[str]] | str:
    """(folder or file, its weight files) inside the repository, or why there are none."""
    real, problem = paths.resolve_inside(root, rel.rstrip("/"))
    if problem is not None:
        return problem
    if os.path.isfile(real):
        return real, [real]
    if os.path.isdir(real):
        return real, [
            os.path.join(real, f)
            for f in paths.walk_files(real)
            if f.endswith(suffixes)
            and paths.is_within(os.path.realpath(os.path.join(real, f)), root)
        ]
    return "no such file or folder"


def file_digests(root: str, rel: str, scanner: Scanner) -> dict[str, str]:
    """The sha256 of each safetensors/GGUF file of a folder (or one file) in the repository, an
    LFS pointer's oid for a pointer: what settles a copy when tensors cannot be read."""
    found = _files(root, rel, registry.TENSOR_SUFFIXES)
    if isinstance(found, str):
        return {}
    real, files = found
    out: dict[str, str] = {}
    for path, scan in scanner.scan_many(os.path.realpath(p) for p in files).items():
        if not isinstance(scan, OSError) and scan.pointer_error is None:
            name = os.path.relpath(path, real) if path != real else os.path.basename(path)
            out[name] = scan.pointer.oid if scan.pointer is not None else scan.sha256
    return out


def collect(root: str, rel: str, scanner: Scanner) -> tuple[list[hashing.TensorDigest], list[str]]:
    """Digests of every safetensors file in a folder (or one file) inside the repository."""
    found = _files(root, rel, (".safetensors",))
    if isinstance(found, str):
        return [], [found]
    real, files = found
    tensors: list[hashing.TensorDigest] = []
    problems: list[str] = []
    scanned = scanner.scan_many((os.path.realpath(p) for p in files), tensors=True)
    for path in files:
        name = os.path.relpath(path, real) if path != real else os.path.basename(path)
        scan = scanned[os.path.realpath(path)]
        if isinstance(scan, OSError):
            problems.append(f"{name}: cannot be read: {scan.strerror}")
            continue
        if scan.pointer is not None or scan.pointer_error is not None:
            problems.append(f"{name}: Git LFS pointer, content not present")
        elif scan.tensors is None:
            problems.append(f"{name}: not a valid safetensors file: {scan.header_error}")
        else:
            tensors.extend(scan.tensors)
    if not files:
        problems.append("no safetensors files")
    return tensors, problems
