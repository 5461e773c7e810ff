"""Integrity and format checks, run through the engine on small repositories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gate import checks
from gate.errors import ManifestError, NothingToCheck
from tests.helpers import (
    HEAD,
    artifact_yaml,
    check,
    check_target,
    errors,
    manifest,
    pointer,
    repo,
    rules_of,
    sha,
    write_gguf,
    write_st,
)


def test_truthful_repo_passes(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    report = check(repo(tmp_path, "model.safetensors"))
    assert errors(report) == []
    assert report.verdict == "pass"
    assert report.exit_code == 0
    (art,) = report.artifacts
    assert (art.method, art.ok, art.format) == ("content", True, "safetensors")


def test_sha_and_size_mismatch_located_on_their_lines(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors", seed=1)
    repo(tmp_path, "model.safetensors")
    write_st(tmp_path / "model.safetensors", seed=2)
    report = check(tmp_path)
    assert errors(report) == ["PG204", "PG205"]
    by_rule = {f.rule: f for f in report.findings}
    assert by_rule["PG204"].location.line == 9  # the sha256 line
    assert by_rule["PG205"].location.line == 10
    assert by_rule["PG204"].declared != by_rule["PG204"].found
    assert report.exit_code == 1


def test_changed_tensors_listed_from_lock(tmp_path: Path) -> None:
    from gate import init_lock

    data = {
        "a": __import__("numpy").arange(8, dtype="float32"),
        "b": __import__("numpy").ones(4, "float32"),
    }
    write_st(tmp_path / "m.safetensors", data)
    manifest(tmp_path, HEAD + "artifacts:\n  - path: m.safetensors\n")
    init_lock.lock(checks.Target.resolve(str(tmp_path), None))
    data["a"][3] = 99
    write_st(tmp_path / "m.safetensors", data)
    (pg205,) = [f for f in check(tmp_path).findings if f.rule == "PG205"]
    assert pg205.details == ("changed: a (content)",)


def test_size_mismatch(tmp_path: Path) -> None:
    (tmp_path / "w.msgpack").write_bytes(b"\x81" + b"\0" * 60)
    repo(tmp_path, "w.msgpack", extra="policy:\n  allowed_formats: [msgpack]\n")
    (tmp_path / "w.msgpack").write_bytes(b"\x81" + b"\0" * 61)
    assert errors(check(tmp_path)) == ["PG203", "PG204"]


def test_missing_artifact(tmp_path: Path) -> None:
    manifest(tmp_path, HEAD + "artifacts:\n  - path: gone.safetensors\n    size: 1\n")
    report = check(tmp_path)
    assert errors(report) == ["PG201"]
    assert report.findings[0].location.line == 7


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../outside.safetensors", "`..`"),
        ("/etc/passwd", "absolute"),
        ("a\\b.bin", "separator"),
        ("C:/x.bin", "absolute"),
    ],
)
def test_paths_leaving_the_repository(tmp_path: Path, path: str, why: str) -> None:
    manifest(tmp_path, HEAD + f"artifacts:\n  - path: '{path}'\n")
    report = check(tmp_path)
    assert errors(report) == ["PG202"]
    assert why in report.findings[0].message


def test_symlink_escaping_is_refused_and_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.safetensors"
    write_st(secret)
    root = tmp_path / "repo"
    root.mkdir()
    os.symlink(secret, root / "model.safetensors")
    manifest(root, HEAD + "artifacts:\n  - path: model.safetensors\n")
    report = check(root)
    assert "PG202" in errors(report)
    assert "symlink" in report.findings[0].message


def test_symlink_inside_repository_is_followed(tmp_path: Path) -> None:
    write_st(tmp_path / "blobs" / "abc")
    os.symlink("blobs/abc", tmp_path / "model.safetensors")
    manifest(
        tmp_path, HEAD + artifact_yaml(tmp_path, "model.safetensors") + "ignore: ['blobs/**']\n"
    )
    assert errors(check(tmp_path)) == []


def test_directory_as_artifact(tmp_path: Path) -> None:
    (tmp_path / "d.safetensors").mkdir()
    manifest(tmp_path, HEAD + "artifacts:\n  - path: d.safetensors\n")
    assert errors(check(tmp_path)) == ["PG213"]


def test_fifo_artifact_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "m.safetensors")
    manifest(tmp_path, HEAD + "artifacts:\n  - path: m.safetensors\n")
    report = check(tmp_path)
    assert errors(report) == ["PG213"]
    assert "not a regular file" in report.findings[0].message


def test_fifo_lock_file_does_not_hang(tmp_path: Path) -> None:
    write_st(tmp_path / "m.safetensors")
    repo(tmp_path, "m.safetensors")
    os.mkfifo(tmp_path / "provenance.lock.json")
    assert errors(check(tmp_path)) == ["PG104"]


def test_unreadable_artifact(tmp_path: Path) -> None:
    # A symlink loop cannot be opened, even by root (a chmod 000 file could be).
    os.symlink("m.safetensors", tmp_path / "m.safetensors")
    manifest(tmp_path, HEAD + "artifacts:\n  - path: m.safetensors\n")
    report = check(tmp_path)
    assert errors(report) == ["PG212"]
    assert "cannot be read" in report.findings[0].message


def test_undeclared_weight_files(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    write_st(tmp_path / "extra" / "other.safetensors")
    (tmp_path / "optimizer.pt").write_bytes(b"PK\x03\x04")
    (tmp_path / "tokenizer.json").write_text("{}")
    repo(tmp_path, "model.safetensors")
    report = check(tmp_path)
    undeclared = sorted(f.found or "" for f in report.findings if f.rule == "PG206")
    assert undeclared == ["extra/other.safetensors", "optimizer.pt"]
    assert all(f.location.line == 6 for f in report.findings if f.rule == "PG206")


def test_ignore_globs(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    write_st(tmp_path / "ckpt" / "step1" / "x.safetensors")
    write_st(tmp_path / "scratch.bin")
    repo(tmp_path, "model.safetensors", extra="ignore: ['ckpt/**', '*.bin']\n")
    assert errors(check(tmp_path)) == []


def test_duplicate_declaration(tmp_path: Path) -> None:
    write_st(tmp_path / "m.safetensors")
    body = artifact_yaml(tmp_path, "m.safetensors")
    manifest(
        tmp_path,
        HEAD + body + body.replace("artifacts:\n", "").replace("- path: m.", "- path: ./m."),
    )
    assert errors(check(tmp_path)) == ["PG208"]


def test_digest_not_declared(tmp_path: Path) -> None:
    write_st(tmp_path / "m.safetensors")
    manifest(tmp_path, HEAD + "artifacts:\n  - path: m.safetensors\n")
    report = check(tmp_path)
    assert errors(report) == ["PG207"]
    assert "lock" in (report.findings[0].hint or "")


class TestLfsPointers:
    def test_matching_pointer_verified_without_content(self, tmp_path: Path) -> None:
        content = write_st(tmp_path / "m.safetensors").read_bytes()
        repo(tmp_path, "m.safetensors")
        (tmp_path / "m.safetensors").write_bytes(pointer(content))
        report = check(tmp_path)
        assert errors(report) == []
        assert "PG209" in rules_of(report, "note")
        assert "not read" in next(f.message for f in report.findings if f.rule == "PG209")
        (art,) = report.artifacts
        assert (art.method, art.sha256, art.size) == ("lfs-pointer", sha(content), len(content))

    def test_pointer_to_other_content_fails(self, tmp_path: Path) -> None:
        write_st(tmp_path / "m.safetensors")
        repo(tmp_path, "m.safetensors")
        (tmp_path / "m.safetensors").write_bytes(pointer(b"something else"))
        assert errors(check(tmp_path)) == ["PG203", "PG204"]

    def test_malformed_pointer(self, tmp_path: Path) -> None:
        (tmp_path / "m.safetensors").write_bytes(
            b"version https://git-lfs.github.com/spec/v1\noid x\n"
        )
        manifest(tmp_path, HEAD + "artifacts:\n  - path: m.safetensors\n    size: 3\n")
        assert errors(check(tmp_path)) == ["PG210"]

    def test_pointer_of_pickle_still_refused_by_name(self, tmp_path: Path) -> None:
        (tmp_path / "pytorch_model.bin").write_bytes(pointer(b"x"))
        decl = f"artifacts:\n  - path: pytorch_model.bin\n    size: 1\n    sha256: {sha(b'x')}\n"
        manifest(tmp_path, HEAD + decl)
        assert errors(check(tmp_path)) == ["PG302"]


class TestFormats:
    def test_pickle_refused_and_never_loaded(self, tmp_path: Path) -> None:
        marker = tmp_path / "pwned"
        payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
        (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02" + payload)
        repo(tmp_path, "pytorch_model.bin")
        report = check(tmp_path)
        assert errors(report) == ["PG302"]
        assert not marker.exists()

    def test_pickle_renamed_safetensors_is_a_pickle(self, tmp_path: Path) -> None:
        (tmp_path / "model.safetensors").write_bytes(b"\x80\x04\x95" + b"\0" * 40)
        repo(tmp_path, "model.safetensors")
        report = check(tmp_path)
        assert errors(report) == ["PG302"]

    def test_allowed_pickle_behind_lfs_pointer_is_not_checked_not_passed(
        self, tmp_path: Path
    ) -> None:
        pointer_repo(tmp_path)
        report = check(tmp_path)
        assert rules_of(report, "warning") == ["PG303"]
        assert "not checked" in (next(f for f in report.findings if f.rule == "PG303").found or "")

    def test_allowed_but_corrupt_pickle_fails_closed(self, tmp_path: Path) -> None:
        (tmp_path / "model.bin").write_bytes(b"PK\x03\x04" + b"\0" * 40)
        repo(tmp_path, "model.bin", extra="policy:\n  allowed_formats: [safetensors, pickle]\n")
        assert errors(check(tmp_path)) == ["PG308"]

    def test_format_not_allowed(self, tmp_path: Path) -> None:
        (tmp_path / "m.msgpack").write_bytes(b"\x81" + b"\0" * 30)
        repo(tmp_path, "m.msgpack")
        assert errors(check(tmp_path)) == ["PG301"]

    def test_declared_format_mismatch(self, tmp_path: Path) -> None:
        write_gguf(tmp_path / "m.gguf")
        manifest(tmp_path, HEAD + artifact_yaml(tmp_path, "m.gguf") + "    format: safetensors\n")
        assert errors(check(tmp_path)) == ["PG305"]

    def test_gguf_is_inspected_and_digested(self, tmp_path: Path) -> None:
        write_gguf(tmp_path / "m.gguf")
        report = check(repo(tmp_path, "m.gguf"))
        assert errors(report) == []
        assert "PG306" not in rules_of(report)

    def test_invalid_gguf_header(self, tmp_path: Path) -> None:
        (tmp_path / "m.gguf").write_bytes(b"GGUF" + b"\0" * 30)
        assert errors(check(repo(tmp_path, "m.gguf"))) == ["PG309"]

    def test_other_formats_reported_as_not_inspected(self, tmp_path: Path) -> None:
        (tmp_path / "m.msgpack").write_bytes(b"\x81" + b"\0" * 30)
        report = check(repo(tmp_path, "m.msgpack", extra="policy:\n  allowed_formats: [msgpack]\n"))
        assert errors(report) == []
        assert "PG306" in rules_of(report, "note")

    def test_invalid_safetensors_header(self, tmp_path: Path) -> None:
        from tests.helpers import raw_st

        (tmp_path / "m.safetensors").write_bytes(
            raw_st({"a": {"dtype": "F32", "shape": [9], "data_offsets": [0, 36]}}, b"\0" * 8)
        )
        report = check(repo(tmp_path, "m.safetensors"))
        assert errors(report) == ["PG304"]


def test_no_manifest_and_no_weights_is_nothing_to_check(tmp_path: Path) -> None:
    with pytest.raises(NothingToCheck):
        check(tmp_path)


def test_no_manifest_but_weights_is_a_manifest_error(tmp_path: Path) -> None:
    write_st(tmp_path / "m.safetensors")
    with pytest.raises(ManifestError, match="weight file"):
        check(tmp_path)


def test_manifest_without_artifacts_and_no_weights_is_nothing_to_check(tmp_path: Path) -> None:
    manifest(tmp_path, HEAD)
    report = check(tmp_path)
    assert report.nothing_to_check
    assert report.exit_code == 3


def test_invalid_manifest_gives_exit_2_even_with_fail_on_never(tmp_path: Path) -> None:
    manifest(tmp_path, "version: 1\nmodel: [\n")
    report = check(tmp_path, fail_on="never")
    assert report.manifest_invalid
    assert report.exit_code == 2
    assert report.verdict == "fail"


def pointer_repo(root: Path) -> None:
    """An allowed pickle whose content is only a Git LFS pointer: one PG303 warning."""
    (root / "model.bin").write_bytes(pointer(b"content"))
    decl = f"artifacts:\n  - path: model.bin\n    size: 7\n    sha256: {sha(b'content')}\n"
    manifest(root, HEAD + decl + "policy:\n  allowed_formats: [pickle]\n")


def test_fail_on_thresholds(tmp_path: Path) -> None:
    pointer_repo(tmp_path)
    assert check(tmp_path).exit_code == 0  # only a warning
    assert check(tmp_path, fail_on="warning").exit_code == 1
    assert check(tmp_path, fail_on="note").exit_code == 1
    assert check(tmp_path, fail_on="never").exit_code == 0


def test_stale_and_broken_lock_file(tmp_path: Path) -> None:
    write_st(tmp_path / "m.safetensors")
    repo(tmp_path, "m.safetensors")
    (tmp_path / "provenance.lock.json").write_text('{"lock_version": 1, "artifacts": {}}')
    assert "PG105" in rules_of(check(tmp_path), "warning")
    (tmp_path / "provenance.lock.json").write_text("{nope")
    report = check(tmp_path)
    assert errors(report) == ["PG104"]
    assert report.findings[0].location.path == "provenance.lock.json"
    (tmp_path / "provenance.lock.json").write_text('{"lock_version": 7, "artifacts": {}}')
    assert errors(check(tmp_path)) == ["PG104"]


def test_checks_that_could_not_run_are_not_passes(tmp_path: Path) -> None:
    write_st(tmp_path / "m.safetensors")
    report = check(repo(tmp_path, "m.safetensors"))  # no card, no lineage references
    notes = {f.rule: f for f in report.findings if f.severity == "note"}
    assert set(notes) == {"PG601", "PG511"}
    assert all("not" in (f.found or "") or "no " in (f.found or "") for f in notes.values())


def test_manifest_outside_root_via_option(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write_st(root / "m.safetensors")
    repo(root, "m.safetensors")
    moved = tmp_path / "elsewhere.yaml"
    (root / "provenance.yaml").rename(moved)
    report = check_target(checks.Target.resolve(str(root), str(moved)))
    assert errors(report) == []
    assert report.manifest == str(moved)


def test_target_must_be_a_directory(tmp_path: Path) -> None:
    from gate.errors import GateError

    with pytest.raises(GateError, match="not a directory"):
        checks.Target.resolve(str(tmp_path / "nope"), None)


def test_weights_hidden_under_other_names_are_found_by_content(tmp_path: Path) -> None:
    import io
    import pickle
    import zipfile

    write_st(tmp_path / "model.safetensors")
    (tmp_path / "weights.dat").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    write_st(tmp_path / "notes.txt")  # a safetensors file named like text
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
    (tmp_path / "blob").write_bytes(buf.getvalue())
    with zipfile.ZipFile(tmp_path / "docs.zip", "w") as z:
        z.writestr("readme.txt", "just documents")
    (tmp_path / "config.json").write_text('{"a": 1}')
    repo(tmp_path, "model.safetensors")
    found = {f.found: f.message for f in check(tmp_path).findings if f.rule == "PG206"}
    assert sorted(found) == ["blob", "notes.txt", "weights.dat"]
    assert "its content is pickle" in found["weights.dat"]
    assert "its content is safetensors" in found["notes.txt"]


def test_declared_tensor_digest_without_a_tensor_table_is_not_checked(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "model.bin").write_bytes(pickle.dumps({"w": [1.0]}, protocol=2))
    digest = "blake3:" + "0" * 64
    manifest(
        tmp_path,
        HEAD + artifact_yaml(tmp_path, "model.bin") + f"    tensors_digest: {digest}\n"
        "policy:\n  allowed_formats: [pickle]\n",
    )
    report = check(tmp_path)
    assert errors(report) == []
    (note,) = [f for f in report.findings if f.rule == "PG306"]
    assert "tensors_digest not checked" in note.message
    assert note.location.line == 10
