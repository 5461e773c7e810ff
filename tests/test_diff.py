"""`provenance-gate diff` on temporary git repositories with real commits."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from tests.helpers import tensors, write_st
from tests.test_cli import run

CARD = "---\nlicense: {lic}\n---\n# tiny\n"
MANIFEST = """\
version: 1
model:
  name: acme/tiny
  license: {lic}
  origin: scratch
artifacts:
  - path: model.safetensors
"""


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


def commit(root: Path, message: str) -> None:
    assert run("lock", str(root)).returncode == 0
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)


def model_repo(root: Path) -> Path:
    root.mkdir()
    git(root, "init", "-q")
    write_st(root / "model.safetensors", tensors(seed=1))
    (root / "README.md").write_text(CARD.format(lic="apache-2.0"))
    (root / "provenance.yaml").write_text(MANIFEST.format(lic="apache-2.0"))
    commit(root, "v1")
    git(root, "tag", "v1")
    return root


def bump(root: Path) -> None:
    """A new model version: one tensor of layer 1 retrained, a tensor added, a new license."""
    t = tensors(seed=1)
    t["layers.1.w"] = t["layers.1.w"] + np.float32(0.5)
    t["layers.1.extra"] = np.ones((2, 2), np.float32) * 3
    write_st(root / "model.safetensors", t)
    (root / "README.md").write_text(CARD.format(lic="mit"))
    text = (root / "provenance.yaml").read_text().replace("apache-2.0", "mit")
    (root / "provenance.yaml").write_text(text)


def test_a_version_bump_is_an_annotated_diff(tmp_path: Path) -> None:
    root = model_repo(tmp_path / "r")
    bump(root)
    assert run("lock", str(root)).returncode == 0
    r = run("diff", str(root), "--base", "v1")
    assert r.returncode == 0, r.stdout + r.stderr  # changes are notes/warnings; the head verifies
    lines = r.stdout.splitlines()
    assert lines[0] == (
        "provenance.yaml:4:12: warning PG704 license-changed: `license` changed from"
        " `apache-2.0` to `mit`"
    )
    (changed,) = [x for x in lines if "PG703" in x]
    assert changed.startswith(
        "provenance.yaml:9:13: note PG703 weights-changed: model.safetensors: weights changed"
        " (1,648 bytes -> 1,736 bytes); 1 of 8 tensors changed, 1 added, 0 removed"
    )
    assert "      layer 1: added extra; changed w" in lines
    assert lines[-1] == "PASS: 0 error(s), 1 warning(s), 2 note(s); 1 artifact(s) checked"


def test_the_new_declarations_are_verified(tmp_path: Path) -> None:
    root = model_repo(tmp_path / "r")
    bump(root)  # weights changed but not re-locked: the declared sha256 no longer verifies
    r = run("diff", str(root), "--base", "v1", "--format", "json")
    assert r.returncode == 1
    rules = [f["rule"] for f in json.loads(r.stdout)["findings"]]
    assert "PG204" in rules and "PG704" in rules


def test_between_two_revisions_without_checkout(tmp_path: Path) -> None:
    root = model_repo(tmp_path / "r")
    bump(root)
    commit(root, "v2")
    (root / "provenance.yaml").write_text("not: [valid")  # the working tree is not read
    r = run("diff", str(root), "--base", "v1", "--head", "HEAD", "--format", "markdown")
    assert r.returncode == 0, r.stderr
    assert "PG703" in r.stdout and "PG704" in r.stdout


def test_lineage_changes_and_a_base_without_manifest(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    git(root, "init", "-q")
    (root / "notes.txt").write_text("before the model\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "v0")
    write_st(root / "model.safetensors", tensors(seed=1))
    (root / "README.md").write_text(CARD.format(lic="apache-2.0"))
    (root / "provenance.yaml").write_text(MANIFEST.format(lic="apache-2.0"))
    assert run("lock", str(root)).returncode == 0
    r = run("diff", str(root), "--base", "HEAD")
    assert "note PG706 diff-base-missing: nothing to compare with: no provenance.yaml at HEAD" in (
        r.stdout
    )
    commit(root, "v1")
    text = (root / "provenance.yaml").read_text().replace("origin: scratch", "origin: derived")
    text = text.replace("artifacts:", "base_models:\n  - id: org/base\n    relation: finetune\n"
                        "artifacts:")  # fmt: skip
    (root / "provenance.yaml").write_text(text)
    r = run("diff", str(root), "--base", "HEAD", "--fail-on", "never")
    assert "PG705 lineage-changed: origin changed from `scratch` to `derived`" in r.stdout
    assert "PG705 lineage-changed: base model org/base added (finetune)" in r.stdout


def test_bad_revisions_are_usage_errors(tmp_path: Path) -> None:
    root = model_repo(tmp_path / "r")
    r = run("diff", str(root), "--base", "no-such-branch")
    assert r.returncode == 2
    assert "unknown git revision 'no-such-branch'" in r.stderr
    r = run("diff", str(root), "--base", "--output=/tmp/x")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_outside_a_git_repository(tmp_path: Path) -> None:
    (tmp_path / "provenance.yaml").write_text(MANIFEST.format(lic="mit"))
    r = run("diff", str(tmp_path), "--base", "main")
    assert r.returncode == 2
    assert "is not in a git repository" in r.stderr
