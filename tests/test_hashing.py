from __future__ import annotations

import os
from pathlib import Path

import blake3
import numpy as np
import pytest
from safetensors.numpy import save_file

from gate import hashing
from tests.helpers import pointer, raw_st, sha, tensors, write_st


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_one_pass_digests_match_independent_hashes(tmp_path: Path, chunk: int) -> None:
    data = tensors(seed=3)
    path = write_st(tmp_path / "m.safetensors", data)
    scan = hashing.scan(str(path), chunk_size=chunk)
    assert scan.sha256 == sha(path.read_bytes())
    assert scan.size == path.stat().st_size
    assert scan.format == "safetensors"
    assert scan.header_error is None
    assert not scan.changed
    assert scan.tensors is not None
    got = {t.name: t.digest for t in scan.tensors}
    assert got == {k: blake3.blake3(v.tobytes()).hexdigest() for k, v in data.items()}


def test_constant_tensors_flagged(tmp_path: Path) -> None:
    data = {
        "zeros": np.zeros(1000, np.float32),
        "ones": np.ones((7, 3), np.float16),
        "random": np.random.default_rng(0).standard_normal(1000).astype(np.float32),
        "almost": np.array([1.0] * 999 + [2.0], np.float32),
    }
    path = write_st(tmp_path / "c.safetensors", data)
    for chunk in (5, 1 << 20):
        scan = hashing.scan(str(path), chunk_size=chunk)
        assert scan.tensors is not None
        flags = {t.name: t.constant for t in scan.tensors}
        assert flags == {"zeros": True, "ones": True, "random": False, "almost": False}


def test_tensor_digest_ignores_order_metadata_and_file_layout(tmp_path: Path) -> None:
    data = tensors(seed=1)
    a = tmp_path / "a.safetensors"
    b = tmp_path / "b.safetensors"
    save_file(data, str(a))
    save_file(dict(reversed(list(data.items()))), str(b), metadata={"note": "re-saved"})
    sa, sb = hashing.scan(str(a)), hashing.scan(str(b))
    assert sa.sha256 != sb.sha256
    assert sa.tensors_digest == sb.tensors_digest
    data["layers.0.w"][0, 0] += 1
    save_file(data, str(b))
    assert hashing.scan(str(b)).tensors_digest != sa.tensors_digest


def test_tensor_digest_definition() -> None:
    t = hashing.TensorDigest("w", "F32", (2, 3), "ab" * 32)
    line = '["w", "F32", [2, 3], "' + "ab" * 32 + '"]\n'
    assert hashing.tensors_digest([t]) == "blake3:" + blake3.blake3(line.encode()).hexdigest()


def test_file_changing_while_hashed_is_detected(tmp_path: Path) -> None:
    path = write_st(tmp_path / "m.safetensors")

    def grow(n: int) -> None:
        with open(path, "ab") as f:
            f.write(b"tamper")

    scan = hashing.scan(str(path), chunk_size=16, progress=grow)
    assert scan.changed


def test_file_shrinking_while_hashed_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"x" * 1000)
    calls = []

    def shrink(n: int) -> None:
        if not calls:
            with open(path, "r+b") as f:
                f.truncate(100)
        calls.append(n)

    assert hashing.scan(str(path), chunk_size=64, progress=shrink).changed


def test_truncated_safetensors(tmp_path: Path) -> None:
    full = write_st(tmp_path / "m.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(full[:-10])
    scan = hashing.scan(str(cut))
    assert scan.tensors is None
    assert scan.header_error
    assert "data section" in scan.header_error
    assert scan.sha256 == sha(full[:-10])


def test_lying_header_still_hashes_whole_file(tmp_path: Path) -> None:
    data = raw_st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8)
    path = tmp_path / "lie.safetensors"
    path.write_bytes(data)
    scan = hashing.scan(str(path))
    assert scan.header_error
    assert scan.sha256 == sha(data)


def test_tiny_header_with_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    path.write_bytes(raw_st(b"{}", b"12345678"))
    assert "data section" in (hashing.scan(str(path)).header_error or "")


def test_lfs_pointer_recognised(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(pointer(b"content"))
    scan = hashing.scan(str(path))
    assert scan.pointer is not None
    assert scan.pointer.oid == sha(b"content")
    assert scan.tensors is None


def test_malformed_pointer_reported(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid nope\n")
    scan = hashing.scan(str(path))
    assert scan.pointer is None
    assert scan.pointer_error


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "e.safetensors"
    path.write_bytes(b"")
    scan = hashing.scan(str(path))
    assert scan.sha256 == sha(b"")
    assert scan.header_error


def test_header_only_reader(tmp_path: Path) -> None:
    path = write_st(tmp_path / "m.safetensors")
    header = hashing.read_safetensors_header(str(path))
    assert len(header.tensors) == len(tensors())


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 31, 32, 33, 48, 1000])
def test_sizes_around_buffer_boundaries(tmp_path: Path, size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    path = tmp_path / "f.bin"
    path.write_bytes(data[:size])
    scan = hashing.scan(str(path), chunk_size=16)
    assert scan.sha256 == sha(data[:size])
    assert scan.size == size and not scan.changed


@pytest.mark.parametrize("chunk", [9, 10, 11, 100])
def test_header_crossing_chunk_boundaries(tmp_path: Path, chunk: int) -> None:
    data = tensors(seed=7)
    path = write_st(tmp_path / "m.safetensors", data)
    scan = hashing.scan(str(path), chunk_size=chunk)
    assert scan.tensors is not None
    assert {t.name: t.digest for t in scan.tensors} == {
        k: blake3.blake3(v.tobytes()).hexdigest() for k, v in data.items()
    }


def test_file_truncated_during_hashing_is_a_finding_not_a_pass(tmp_path: Path) -> None:
    from gate import checks
    from gate.scanner import Scanner
    from tests.helpers import HEAD, artifact_yaml, check_target, manifest

    path = write_st(tmp_path / "m.safetensors", {"w": np.arange(4096, dtype=np.float32)})
    manifest(tmp_path, HEAD + artifact_yaml(tmp_path, "m.safetensors"))

    class Truncate:
        def start(self, total: int, files: int) -> None: ...

        def advance(self, n: int) -> None:
            os.truncate(path, 100)

        def finish(self) -> None: ...

    report = check_target(
        checks.Target.resolve(str(tmp_path), None), scanner=Scanner(progress=Truncate())
    )
    assert [f.rule for f in report.findings if f.severity == "error"] == ["PG211"]
    assert report.exit_code == 1


def test_parallel_scans_match_sequential(tmp_path: Path) -> None:
    from gate.scanner import Scanner

    files = [str(write_st(tmp_path / f"s{i}.safetensors", seed=i)) for i in range(6)]
    parallel = Scanner(workers=3).scan_many(files, tensors=True)
    assert all(parallel[f] == hashing.scan(f) for f in files)


@pytest.mark.parametrize("chunk", [5, 64, 1 << 20])
def test_threaded_and_inline_tensor_streams_agree(tmp_path: Path, chunk: int) -> None:
    data = {**tensors(seed=11), "zeros": np.zeros(5000, np.float16)}
    path = str(write_st(tmp_path / "m.safetensors", data))
    threaded = hashing.scan(path, chunk_size=chunk, threaded=True)
    inline = hashing.scan(path, chunk_size=chunk, threaded=False)
    assert threaded == inline
    assert threaded.tensors is not None
    assert {t.name for t in threaded.tensors if t.constant} == {
        "layers.0.norm",
        "layers.0.bias",
        "layers.1.norm",
        "layers.1.bias",
        "zeros",
    }


def test_one_file_uses_the_helper_thread_when_cores_idle(tmp_path: Path) -> None:
    import threading

    from gate.scanner import Scanner

    path = str(
        write_st(
            tmp_path / "m.safetensors", {"w": np.ones((512, 512), np.float32) * np.arange(512)}
        )
    )
    seen: set[str] = set()

    class Watch:
        def start(self, total: int, files: int) -> None: ...

        def advance(self, n: int) -> None:
            seen.update(t.name for t in threading.enumerate())

        def finish(self) -> None: ...

    Scanner(workers=2, progress=Watch()).scan(path, tensors=True)
    assert "provenance-gate-tensors" in seen  # the tensor helper ran beside the reader
