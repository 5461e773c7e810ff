"""Per-tensor digests are computed only where they are needed (issue 17): a check computes one
SHA-256 per byte unless a lineage claim or a changed file needs the tensors; `lock` computes both
in one read; the stat cache keeps what was computed; a lock file edited by hand never feeds the
exact lineage tier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gate import checks, hashing, init_lock
from gate.cache import StatCache
from gate.evidence import Evidence, gather, load_manifest
from gate.scanner import Scanner
from tests.helpers import (
    HEAD,
    artifact_yaml,
    check,
    check_target,
    errors,
    manifest,
    tensors,
    write_st,
)


def _evidence(root: Path, scanner: Scanner | None = None, *, all_tensors: bool = False) -> Evidence:
    target = checks.Target.resolve(str(root), None)
    m, problems = load_manifest(target, None)
    assert m is not None, problems
    return gather(target, m, checks.Options(), scanner or Scanner(), all_tensors=all_tensors)


def _scan(root: Path, scanner: Scanner | None = None, **kw: bool) -> hashing.FileScan:
    (done,) = _evidence(root, scanner, **kw).artifacts
    assert done is not None and done.scan is not None
    return done.scan


def _plain(root: Path) -> Path:
    write_st(root / "model.safetensors", seed=1)
    manifest(root, HEAD + artifact_yaml(root, "model.safetensors"))  # scratch, no references
    return root


def test_a_check_without_lineage_claims_computes_only_the_sha256(tmp_path: Path) -> None:
    root = _plain(tmp_path)
    scan = _scan(root)
    assert scan.lazy and scan.tensors is None
    assert scan.sha256 == hashing.scan(str(root / "model.safetensors")).sha256
    report = check(root)  # tensors_digest is declared: implied by the matching SHA-256
    assert errors(report) == [] and not [f for f in report.findings if f.rule == "PG306"]


def test_a_lineage_claim_gets_the_digests_in_the_same_read(tmp_path: Path) -> None:
    write_st(tmp_path / "base" / "model.safetensors", seed=1)
    write_st(tmp_path / "model.safetensors", seed=1)
    head = HEAD.replace("origin: scratch", "origin: derived")
    bases = "base_models:\n  - path: base\n    relation: finetune\n    license: apache-2.0\n"
    manifest(tmp_path, head + bases + artifact_yaml(tmp_path, "model.safetensors"))
    scanner = Scanner()
    scan = _scan(tmp_path, scanner)
    assert not scan.lazy and scan.tensors is not None
    assert scanner.files_hashed == 1  # one read
    # the exact tier sees the copy
    report = check(tmp_path, lineage_depth="exact")
    assert "PG504" in [f.rule for f in report.findings]


def test_a_changed_file_is_read_again_to_name_its_changed_tensors(tmp_path: Path) -> None:
    data = {"a": np.arange(8, dtype="float32"), "b": np.ones(4, "float32")}
    write_st(tmp_path / "m.safetensors", data)
    manifest(tmp_path, HEAD + "artifacts:\n  - path: m.safetensors\n")
    init_lock.lock(checks.Target.resolve(str(tmp_path), None))
    data["a"][3] = 99
    write_st(tmp_path / "m.safetensors", data)
    scanner = Scanner()
    scan = _scan(tmp_path, scanner)
    assert not scan.lazy and scan.tensors is not None
    assert scanner.files_hashed == 2  # the SHA-256 pass, then the tensors of a changed file
    (pg205,) = [f for f in check(tmp_path).findings if f.rule == "PG205"]
    assert pg205.details == ("changed: a (content)",)


def test_lock_computes_both_digests_in_one_read(tmp_path: Path) -> None:
    root = _plain(tmp_path)
    scanner = Scanner()
    scan = _scan(root, scanner, all_tensors=True)
    assert not scan.lazy and scan.tensors is not None and scanner.files_hashed == 1
    init_lock.lock(checks.Target.resolve(str(root), None))
    locked = json.loads((root / "provenance.lock.json").read_text())
    assert locked["artifacts"]["model.safetensors"]["tensors"]


def test_the_stat_cache_keeps_digests_and_upgrades_a_lazy_row(tmp_path: Path) -> None:
    root = _plain(tmp_path / "m")
    real = str((root / "model.safetensors").resolve())
    cache = StatCache(str(tmp_path / "cache"))
    first = Scanner(cache)
    assert first.scan(real).lazy and first.files_hashed == 1
    again = Scanner(cache)
    assert again.scan(real).lazy and again.files_hashed == 0  # a hit
    full = again.scan(real, tensors=True)  # a lazy row cannot answer: read once more
    assert full.tensors is not None and again.files_hashed == 1
    last = Scanner(cache)
    assert last.scan(real).tensors == full.tensors and last.files_hashed == 0
    assert last.scan(real, tensors=True).tensors == full.tensors and last.files_hashed == 0


def test_a_lazy_scan_still_validates_the_header(tmp_path: Path) -> None:
    path = write_st(tmp_path / "m.safetensors", seed=1)
    data = bytearray(path.read_bytes())
    data[12:14] = b"\xff\xfe"  # invalid UTF-8 inside the JSON header
    path.write_bytes(bytes(data))
    lazy, full = hashing.scan(str(path), tensors=False), hashing.scan(str(path))
    assert lazy.header_error is not None and lazy.header_error == full.header_error
    assert not lazy.lazy and lazy.tensors is None
    truncated = tmp_path / "t.safetensors"
    write_st(truncated, seed=1)
    truncated.write_bytes(truncated.read_bytes()[:-5])
    assert hashing.scan(str(truncated), tensors=False).header_error is not None


def test_a_lock_edited_by_hand_does_not_feed_the_exact_tier(tmp_path: Path) -> None:
    """A `scratch` model identical to its reference, whose lock claims other tensor digests:
    the exact tier reads the file's own digests and still finds the copy."""
    write_st(tmp_path / "known" / "model.safetensors", tensors(seed=3))
    write_st(tmp_path / "model.safetensors", tensors(seed=3))
    refs = "policy:\n  lineage:\n    references: [known]\n"
    manifest(tmp_path, HEAD + "artifacts:\n  - path: model.safetensors\n" + refs)
    init_lock.lock(checks.Target.resolve(str(tmp_path), None))
    lock_path = tmp_path / "provenance.lock.json"
    doc = json.loads(lock_path.read_text())
    for entry in doc["artifacts"]["model.safetensors"]["tensors"].values():
        entry["blake3"] = "0" * 64
    lock_path.write_text(json.dumps(doc))
    report = check(tmp_path, lineage_depth="exact")
    assert not [f for f in report.findings if f.rule in ("PG104", "PG105")]  # the lock reads
    (pg502,) = [f for f in report.findings if f.rule == "PG502"]
    assert "bit-identical" in pg502.message


def test_without_a_cache_each_file_is_read_once(tmp_path: Path) -> None:
    """No stat cache: the weight tiers' verdict is not cached, and nothing re-reads a file to
    key it (a check with a local base reads the model and the base once each)."""
    pytest.importorskip("scipy")
    base = tensors(seed=1)
    write_st(tmp_path / "base" / "model.safetensors", base)
    write_st(tmp_path / "model.safetensors", {k: v + np.float32(0.01) for k, v in base.items()})
    head = HEAD.replace("origin: scratch", "origin: derived")
    bases = "base_models:\n  - path: base\n    relation: finetune\n    license: apache-2.0\n"
    manifest(tmp_path, head + bases + artifact_yaml(tmp_path, "model.safetensors"))
    scanner = Scanner()
    report = check_target(checks.Target.resolve(str(tmp_path), None), scanner=scanner)
    assert not [f for f in report.findings if f.rule.startswith("PG5") and f.rule != "PG501"]
    assert scanner.files_hashed == 2
