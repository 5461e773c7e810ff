"""The Hub code path against olah, a real Hub mirror, serving git repositories made here (weights
committed as Git LFS pointers, their content in .git/lfs/objects): file lists with LFS sha256,
branch resolution, cards, small files, and headers read from a stream that ignores Range."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import hubserver

pytestmark = pytest.mark.slow  # olah, the Hub stand-in, serving git repositories

GATE = str(Path(sys.executable).parent / "provenance-gate")


@pytest.fixture(scope="module")
def olah(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("olah")
    # small enough (1.6 MB) that a stream ignoring Range still serves every sampled row
    fam = hubserver.llama_family(str(root / "models"), hidden=128, inter=344, vocab=1024,
                                 layers=2, license="llama2")  # fmt: skip
    mirrors = str(root / "mirrors")
    shas = {"acme/base": hubserver.git_mirror(mirrors, "acme/base", fam["base"])}
    with hubserver.olah(str(root), mirrors) as endpoint:
        yield {"endpoint": endpoint, "shas": shas, "family": fam}


@pytest.fixture
def client(olah: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    from gate import hubclient as hub

    monkeypatch.setenv("HF_ENDPOINT", olah["endpoint"])
    return hub.HubClient(cache_dir=str(tmp_path / "gate-cache"))


def test_files_carry_the_lfs_sha256_of_the_content(olah: dict[str, Any], client: Any) -> None:
    commit = olah["shas"]["acme/base"]
    files = {f.path: f for f in client.files("acme/base", commit)}
    weights = os.path.join(olah["family"]["base"], "model.safetensors")
    assert files["model.safetensors"].sha256 == hubserver.sha256_file(weights)
    assert files["model.safetensors"].size == os.path.getsize(weights)
    assert files["config.json"].sha256 is None  # stored in git, not LFS


def test_branch_resolves_to_the_git_commit(olah: dict[str, Any], client: Any) -> None:
    assert client.resolve("acme/base", "main") == olah["shas"]["acme/base"]


def test_small_files_and_a_header_through_the_mirror(olah: dict[str, Any], client: Any) -> None:
    from gate.lineage import sampled

    commit = olah["shas"]["acme/base"]
    card = client.read_small("acme/base", commit, "README.md")
    assert card is not None and card.startswith(b"---\nlicense: llama2\n")
    assert client.read_small("acme/base", commit, "no-such-file") is None
    (weights,) = [f for f in client.files("acme/base", commit) if f.sha256]
    tensors = sampled.headers(client, "acme/base", commit, [weights])
    assert {t.info.name for t in tensors} >= {"model.embed_tokens.weight", "lm_head.weight"}


def repo(tmp_path: Path, weights: str, commit: str, relation: str, license: str) -> Path:
    shutil.copy(os.path.join(weights, "model.safetensors"), tmp_path)
    (tmp_path / "provenance.yaml").write_text(
        f"version: 1\nmodel:\n  name: m\n  license: {license}\n  origin: derived\n"
        f"base_models:\n  - id: acme/base\n    revision: {commit}\n    relation: {relation}\n"
        "artifacts:\n  - path: model.safetensors\n"
    )
    subprocess.run([GATE, "lock", str(tmp_path)], check=True, capture_output=True)
    return tmp_path


def run(root: Path, olah: dict[str, Any]) -> tuple[int, set[str], list[dict[str, Any]]]:
    done = subprocess.run([GATE, "check", str(root), "-f", "json"], capture_output=True,
                          text=True, check=False,
                          env=dict(os.environ, HF_ENDPOINT=olah["endpoint"]))  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    findings = json.loads(done.stdout)["findings"]
    return done.returncode, {f["rule"] for f in findings}, findings


def test_a_finetune_is_verified_through_the_mirror(olah: dict[str, Any], tmp_path: Path) -> None:
    commit = olah["shas"]["acme/base"]
    rc, rules, findings = run(
        repo(tmp_path, olah["family"]["finetune"], commit, "finetune", "llama2"), olah
    )
    assert rc == 0 and "PG508" in rules and not rules & {"PG406", "PG501", "PG802"}, findings


def test_the_base_card_license_is_inherited_through_the_mirror(
    olah: dict[str, Any], tmp_path: Path
) -> None:
    commit = olah["shas"]["acme/base"]
    rc, rules, _ = run(
        repo(tmp_path, olah["family"]["finetune"], commit, "finetune", "apache-2.0"), olah
    )
    assert rc == 1 and "PG406" in rules


def test_a_copy_is_recognised_from_lfs_digests(olah: dict[str, Any], tmp_path: Path) -> None:
    commit = olah["shas"]["acme/base"]
    rc, rules, findings = run(
        repo(tmp_path, olah["family"]["base"], commit, "finetune", "llama2"), olah
    )
    (f,) = [f for f in findings if f["rule"] == "PG504"]
    assert rc == 0 and "by the Hub's LFS digests" in f["found"] and "PG508" not in rules
