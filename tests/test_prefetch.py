"""Reads start before they are needed (issue 17): `check` and `lock` start hashing the declared
files as soon as the manifest is parsed, so its validation and the checks' set-up overlap the
reads. A prefetch is a hint: results never depend on it, nothing is read twice because of it,
and an invalid manifest stops the reads it started."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import gate.manifest as manifest_module
from gate import checks, hashing, init_lock
from gate.manifest import declared_reads
from gate.scanner import Scanner
from tests.helpers import HEAD, artifact_yaml, check_target, manifest, write_st

MB = 1 << 20


def _files(root: Path, n: int = 3) -> list[str]:
    return [str(write_st(root / f"m{i}.safetensors", seed=i)) for i in range(n)]


def _big(path: Path, size: int) -> str:
    """A file of `size` bytes (not a model: the hash is all that is read)."""
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


class Holding:
    """A progress sink that holds the reading worker after its first chunk until the
    scanner is asked to cancel (so a cancel always meets a read in flight)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.go = threading.Event()
        self.done = 0
        self.finished = 0

    def attach(self, scanner: Scanner) -> Scanner:
        self.go = scanner._cancel
        return scanner

    def start(self, total_bytes: int, files: int) -> None:
        pass

    def advance(self, n: int) -> None:
        self.done += n
        self.started.set()
        self.go.wait(timeout=10)

    def finish(self) -> None:
        self.finished += 1


def test_a_prefetched_file_is_read_once_with_the_same_result(tmp_path: Path) -> None:
    paths = _files(tmp_path)
    scanner = Scanner()
    scanner.prefetch(paths)
    got = scanner.scan_many(paths)
    assert scanner.files_hashed == 3 and scanner.files_cached == 0
    for path in paths:
        want = hashing.scan(path, tensors=False)
        scan = got[path]
        assert isinstance(scan, hashing.FileScan)
        assert (scan.sha256, scan.lazy, scan.size) == (want.sha256, want.lazy, want.size)
    scanner.scan_many(paths[:1])
    assert scanner.files_hashed == 4  # no cache: asked again, read again (nothing is kept)


def test_a_prefetch_without_digests_is_read_again_for_them(tmp_path: Path) -> None:
    (path,) = _files(tmp_path, 1)
    scanner = Scanner()
    scanner.prefetch([path], tensors=False)
    scan = scanner.scan(path, tensors=True)
    assert not scan.lazy and scan.tensors == hashing.scan(path).tensors
    assert scanner.files_hashed == 2
    # the other way round, a read with digests answers a request without them
    again = Scanner()
    again.prefetch([path], tensors=True)
    assert again.scan(path).tensors is not None and again.files_hashed == 1


def test_cancel_stops_a_read_in_flight_and_leaves_no_thread(tmp_path: Path) -> None:
    size = 64 * MB
    paths = [_big(tmp_path / f"f{i}.bin", size) for i in range(3)]
    sink = Holding()
    before = threading.active_count()
    scanner = sink.attach(Scanner(workers=1, progress=sink))
    scanner.prefetch(paths)
    assert sink.started.wait(timeout=10)
    scanner.cancel()
    assert sink.done == hashing.CHUNK  # stopped after one chunk; the other files never started
    assert scanner.files_hashed == 1 and scanner.bytes_hashed == size
    assert sink.finished == 1
    for _ in range(100):
        if threading.active_count() == before:
            break
        threading.Event().wait(0.01)
    assert threading.active_count() == before
    # the scanner still works after a cancel
    sink.go = threading.Event()
    sink.go.set()
    done = scanner.scan(paths[0])
    assert done.sha256 == hashing.scan(paths[0], tensors=False).sha256


def test_an_invalid_manifest_stops_the_reads_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 64 * MB
    _big(tmp_path / "big.bin", size)
    manifest(tmp_path, HEAD + "artifacts:\n  - path: big.bin\n    size: many\n")
    sink = Holding()
    real_validate = manifest_module.validate

    def validate(*args: Any) -> Any:
        assert sink.started.wait(timeout=10)  # the read is under way before validation
        return real_validate(*args)

    monkeypatch.setattr("gate.manifest.validate", validate)
    scanner = sink.attach(Scanner(workers=1, progress=sink))
    report = check_target(checks.Target.resolve(str(tmp_path), None), scanner=scanner)
    assert report.manifest_invalid and [f.rule for f in report.findings] == ["PG102"]
    assert sink.done == hashing.CHUNK < size and not scanner._pending  # stopped, not finished


def test_check_and_lock_start_the_reads_before_validating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_st(tmp_path / "model.safetensors", seed=1)
    manifest(tmp_path, HEAD + artifact_yaml(tmp_path, "model.safetensors"))
    order: list[str] = []
    real_validate = manifest_module.validate
    real_submit = Scanner._submit

    def validate(*args: Any) -> Any:
        order.append("validate")
        return real_validate(*args)

    def submit(self: Scanner, todo: Any, tensors: bool) -> None:
        order.append(f"read tensors={tensors}")
        real_submit(self, todo, tensors)

    monkeypatch.setattr("gate.manifest.validate", validate)
    monkeypatch.setattr(Scanner, "_submit", submit)
    target = checks.Target.resolve(str(tmp_path), None)
    scanner = Scanner()
    assert check_target(target, scanner=scanner).exit_code == 0
    assert order == ["read tensors=False", "validate"] and scanner.files_hashed == 1
    order.clear()
    init_lock.lock(target)
    assert order == ["read tensors=True", "validate"]


@pytest.mark.parametrize(
    ("plain", "want"),
    [
        (None, ([], False)),
        ([], ([], False)),
        ({"artifacts": "x"}, ([], False)),
        ({"artifacts": [1, None, {"path": 3}, {"path": "a"}, {"path": "\ud800"}]}, (["a"], False)),
        (
            {"model": {"origin": "scratch"}, "policy": {"lineage": {"references": ["r"]}}},
            ([], True),
        ),
        ({"model": {"origin": "scratch"}, "policy": {"lineage": []}}, ([], False)),
        ({"model": "derived", "base_models": [{"path": "b"}]}, ([], True)),
    ],
)
def test_declared_reads_takes_any_document(plain: Any, want: tuple[list[str], bool]) -> None:
    assert declared_reads(plain) == want
