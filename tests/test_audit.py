"""`provenance-gate audit`: many models on a concurrent.futures executor (threads, processes, a
Dask cluster on loopback), JSON Lines results, resuming, Hub models identified through range
requests with backoff on HTTP 429."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from gate import audit
from gate.cli import main
from gate.lineage import index, pack
from gate.scanner import Scanner
from tests import hubserver
from tests.helpers import artifact_yaml, manifest


@pytest.fixture(scope="module")
def fam(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("audit")
    out = hubserver.llama_family(str(root), hidden=128, inter=352, vocab=1024, layers=2, seed=9)
    pack.fingerprint(out["base"], str(root / f"base{pack.SUFFIX}"), scanner=Scanner(),
                     name="acme/base")  # fmt: skip
    index.add(str(root / "index"), [str(root / f"base{pack.SUFFIX}")])
    # a repository with a manifest: a scratch claim on the fine-tune's weights
    repo = root / "repo"
    repo.mkdir()
    shutil.copy(Path(out["finetune"]) / "model.safetensors", repo / "model.safetensors")
    head = "version: 1\nmodel:\n  name: x\n  license: mit\n  origin: scratch\n"
    manifest(repo, head + artifact_yaml(repo, "model.safetensors"))
    return {**out, "index": str(root / "index"), "repo": str(repo)}


def write_list(tmp_path: Path, *entries: str) -> str:
    path = tmp_path / "models.txt"
    path.write_text("# the models to audit\n\n" + "\n".join(entries) + "\n")
    return str(path)


def results(path: Path) -> dict[str, dict[str, object]]:
    return {d["model"]: d for d in map(json.loads, path.read_text().splitlines())}


def test_an_audit_identifies_and_checks_each_model(fam: dict[str, str], tmp_path: Path) -> None:
    listed = write_list(tmp_path, fam["finetune"], fam["independent"], fam["repo"], "missing")
    out = tmp_path / "out.jsonl"
    rc = main(["audit", listed, "--index", fam["index"], "-o", str(out), "--executor", "thread",
               "-j", "2"])  # fmt: skip
    assert rc == 1  # one entry could not be audited
    got = results(out)
    assert set(got) == {fam["finetune"], fam["independent"], fam["repo"], "missing"}
    ft = got[fam["finetune"]]["identify"]
    assert isinstance(ft, dict) and ft["result"] == "known base"
    assert ft["bases"][0]["name"] == "acme/base" and ft["bases"][0]["relation"] == "finetune"
    assert got[fam["independent"]]["identify"]["result"] == "no known base"  # type: ignore[index]
    # the check follows the repository's own manifest (its policy names no index: the bundled
    # one, which does not hold acme/base); the audit's identification names the base
    repo = got[fam["repo"]]
    assert repo["check"] == {"exit_code": 0, "note": ["PG511", "PG601"]}, repo
    assert repo["identify"]["bases"][0]["name"] == "acme/base"  # type: ignore[index]
    assert got["missing"]["status"] == "error" and "no such" in str(got["missing"]["error"])


def test_a_resumed_audit_runs_only_what_is_missing(fam: dict[str, str], tmp_path: Path) -> None:
    listed = write_list(tmp_path, fam["base"], fam["finetune"], fam["independent"])
    out = tmp_path / "out.jsonl"
    done = {"model": fam["base"], "status": "ok", "marker": True}
    # an interrupted run: one full line, one cut short
    out.write_text(json.dumps(done) + "\n" + '{"model": "' + fam["finetune"][:10])
    jobs = audit.jobs(listed, (fam["index"],), 1e-3, True, None)
    pool = audit.pool("thread", 2)
    try:
        summary = audit.audit(jobs, str(out), pool, True, print)
    finally:
        pool.close()
    assert (summary.audited, summary.skipped, summary.found) == (2, 1, 1)
    got = results(out)  # every line whole again
    assert got[fam["base"]].get("marker") is True and len(got) == 3


def test_a_process_pool_gives_the_same_results(fam: dict[str, str], tmp_path: Path) -> None:
    listed = write_list(tmp_path, fam["finetune"], fam["independent"])
    jobs = audit.jobs(listed, (fam["index"],), 1e-3, True, None)
    lines: list[str] = []
    pool = audit.pool("process", 2)
    try:
        audit.audit(jobs, None, pool, False, lines.append)
    finally:
        pool.close()
    got = {d["model"]: d["identify"]["result"] for d in map(json.loads, lines)}
    assert got == {fam["finetune"]: "known base", fam["independent"]: "no known base"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resume"], "--resume needs --output"),
        (["--executor", "fork"], "unknown executor"),
        (["--executor", "dask://127.0.0.1:1"], "no Dask scheduler"),
        (["--no-bundled-index"], "no index to look in"),
    ],
)
def test_bad_audit_options_are_usage_errors(
    fam: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
    message: str,
) -> None:  # fmt: skip
    assert main(["audit", write_list(tmp_path, fam["base"]), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_hostile_list_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "list.txt"
    bad.write_bytes(b"\xff\xfe model\n")
    with pytest.raises(audit.GateError, match="not UTF-8"):
        audit.read_list(str(bad))
    bad.write_text("ok\nbad\x1bentry\n")
    with pytest.raises(audit.GateError, match="line 2"):
        audit.read_list(str(bad))


@pytest.mark.slow  # a Hub stand-in and a Dask cluster on loopback
def test_hub_models_on_a_dask_cluster_with_rate_limits(fam: dict[str, str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from distributed import LocalCluster

    server = hubserver.RangeHub()
    try:
        sha = server.add("acme/tuned", fam["finetune"], throttle=3)  # three 429s first
        other = server.add("acme/other", fam["independent"])
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        listed = write_list(tmp_path, f"hf://acme/tuned@{sha}", f"hf://acme/other@{other}",
                            fam["finetune"])  # fmt: skip
        out = tmp_path / "out.jsonl"
        with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                          dashboard_address=None, processes=True) as cluster:  # fmt: skip
            address = cluster.scheduler_address.removeprefix("tcp://")
            rc = main(["audit", listed, "--index", fam["index"], "-o", str(out),
                       "--executor", f"dask://{address}"])  # fmt: skip
        assert rc == 0, out.read_text()
        got = results(out)
        tuned = got[f"hf://acme/tuned@{sha}"]["identify"]
        assert isinstance(tuned, dict) and tuned["bases"][0]["relation"] == "finetune"
        assert got[f"hf://acme/other@{other}"]["identify"]["result"] == "no known base"  # type: ignore[index]
        assert server.throttled == 3
        weights = os.path.getsize(Path(fam["finetune"]) / "model.safetensors")
        assert server.sent["acme/tuned"] < weights  # headers and the pack's rows only
    finally:
        server.close()


def test_the_progress_bar_counts_models_and_clears_itself() -> None:
    import io

    from gate.cli import CountBar

    out = io.StringIO()
    bar = CountBar(out)
    bar(1, 4)
    assert "auditing [######" in out.getvalue() and "1/4 models" in out.getvalue()
    bar(4, 4)
    assert out.getvalue().endswith("\r\x1b[K")
