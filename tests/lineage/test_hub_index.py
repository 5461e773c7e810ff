"""Pack indexes published as Hub datasets (`hf://datasets/owner/name@<commit>`): fetched once
into the gate's cache through the Hub stand-in, then used offline, by identify and by check."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gate.cli import main
from gate.lineage import index, pack
from gate.scanner import Scanner
from tests import hubserver
from tests.helpers import artifact_yaml, manifest

pytestmark = pytest.mark.slow  # a Hub stand-in on loopback


def test_a_hub_index_is_fetched_once_and_used_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fam = hubserver.llama_family(str(tmp_path / "fam"), hidden=128, inter=352, vocab=1024,
                                 layers=2, seed=11)  # fmt: skip
    published = tmp_path / "published"
    pack.fingerprint(fam["base"], str(tmp_path / f"b{pack.SUFFIX}"), scanner=Scanner(),
                     name="acme/base")  # fmt: skip
    index.add(str(published), [str(tmp_path / f"b{pack.SUFFIX}")])
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(Path(fam["finetune"]) / "model.safetensors", repo / "model.safetensors")
    head = "version: 1\nmodel:\n  name: x\n  license: mit\n  origin: scratch\n"
    manifest(repo, head + artifact_yaml(repo, "model.safetensors"))
    cache = tmp_path / "cache"
    monkeypatch.setenv("PROVENANCE_GATE_CACHE_DIR", str(cache))
    server = hubserver.RangeHub()
    try:
        sha = server.add("acme/known-bases", str(published))
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        uri = f"hf://datasets/acme/known-bases@{sha}"
        assert main(["identify", fam["finetune"], "--index", uri, "--fail-if-found"]) == 1
        assert "1. acme/base: finetune" in capsys.readouterr().out
        fetched = len(server.requests)
        assert main(["check", str(repo), "--index", uri]) == 1
        assert "PG513" in capsys.readouterr().out
        assert len(server.requests) == fetched  # the pinned copy in the cache, no request
    finally:
        server.close()
    # the Hub gone: the cached copy still serves, offline
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert main(["identify", fam["finetune"], "--index", uri, "--offline"]) == 0
    assert "acme/base" in capsys.readouterr().out
    # an index never fetched, with no Hub: a located not-checked finding, and a clear error
    other = f"hf://datasets/acme/other@{'a' * 40}"
    assert main(["check", str(repo), "--index", other, "--strict"]) == 1
    out = capsys.readouterr().out
    assert "PG501" in out and "cannot fetch the index" in out
    assert main(["identify", fam["finetune"], "--index", "hf://datasets/acme/x@main"]) == 2
    assert "full commit sha" in capsys.readouterr().err
