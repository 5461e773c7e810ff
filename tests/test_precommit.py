"""The hooks, run by the real pre-commit framework from `.pre-commit-hooks.yaml` itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import artifact_yaml, tensors, write_st
from tests.test_diff import git

pytestmark = pytest.mark.slow  # real pre-commit environments

ROOT = Path(__file__).resolve().parent.parent
# hook environments are built once per machine (pip installs this repository into them)
STORE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "provenance-gate-pre-commit"
)


def model_repo(root: Path) -> Path:
    root.mkdir()
    git(root, "init", "-q")
    write_st(root / "model.safetensors", tensors(seed=1))
    (root / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    (root / "provenance.yaml").write_text(
        "version: 1\nmodel:\n  name: acme/tiny\n  license: apache-2.0\n  origin: scratch\n"
        + artifact_yaml(root, "model.safetensors")
    )
    git(root, "add", "-A")
    git(root, "commit", "-qm", "model")
    return root


def try_repo(repo: Path, hook: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        PRE_COMMIT_HOME=str(STORE),
        PROVENANCE_GATE_CACHE_DIR=str(cache),
        PROVENANCE_GATE_VERBOSE="1",
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pre_commit",
            "try-repo",
            str(ROOT),
            hook,
            "--all-files",
            "--verbose",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_fast_hook_passes_caches_and_catches_tampering(tmp_path: Path) -> None:
    repo = model_repo(tmp_path / "repo")
    cache = tmp_path / "cache"
    first = try_repo(repo, "provenance-gate", cache)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Passed" in first.stdout
    assert "1 file(s) read" in first.stdout
    second = try_repo(repo, "provenance-gate", cache)
    assert second.returncode == 0, second.stdout
    assert "0 file(s) read (0.0 MB), 1 unchanged file(s) taken from the stat cache" in second.stdout
    write_st(repo / "model.safetensors", tensors(seed=2))  # same size, other weights
    git(repo, "commit", "-qam", "tampered")
    third = try_repo(repo, "provenance-gate", cache)
    assert third.returncode == 1
    assert "Failed" in third.stdout
    assert "PG204 sha256-mismatch" in third.stdout


def test_hook_definitions() -> None:
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"provenance-gate", "provenance-gate-full"}
    assert (
        hooks["provenance-gate"]["entry"] == "provenance-gate check --lineage-depth exact --offline"
    )
    assert all(h["pass_filenames"] is False for h in hooks.values())
    import re

    assert hooks["provenance-gate"]["always_run"] is True  # a pickle may be named notes.txt
    files = re.compile(hooks["provenance-gate-full"]["files"])
    for path in (
        "provenance.yaml",
        "README.md",
        "w/model-00001-of-00002.safetensors",
        "m.gguf",
        "model.safetensors.index.json",
        "LICENSE",
        ".gitattributes",
        "x.bin",
    ):
        assert files.search(path), path
    assert not files.search("src/train.py")
