"""Hub base models through the real CLI, against Hub stand-ins on loopback (tests/hubserver.py):
RangeHub for range requests and every error path, olah for real git repositories (below)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests import hubserver

pytestmark = pytest.mark.slow  # Hub stand-ins on loopback

GATE = str(Path(sys.executable).parent / "provenance-gate")
UNKNOWN_SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = str(tmp_path_factory.mktemp("family"))
    out = hubserver.llama_family(root)
    llama = os.path.join(root, "llama-licensed")
    shutil.copytree(out["base"], llama)
    Path(llama, "README.md").write_text("---\nlicense: llama2\n---\n# a Llama 2 base\n")
    out["llama"] = llama
    broken = os.path.join(root, "broken")
    os.makedirs(broken)
    # a length prefix claiming a 1 GB header: refused by the cap before anything is read
    Path(broken, "model.safetensors").write_bytes((1 << 30).to_bytes(8, "little") + b"{}" * 64)
    out["broken"] = broken
    mid = os.path.join(root, "mid")  # a fine-tune of acme/llama whose card says apache-2.0
    shutil.copytree(out["base"], mid)
    Path(mid, "README.md").write_text("---\nlicense: apache-2.0\nbase_model: acme/llama\n---\n")
    out["mid"] = mid
    return out


@pytest.fixture(scope="module")
def hub(family: dict[str, str]) -> Any:
    server = hubserver.RangeHub()
    server.shas = {  # type: ignore[attr-defined]
        "acme/base": server.add("acme/base", family["base"]),
        "acme/other": server.add("acme/other", family["independent"]),
        "acme/llama": server.add("acme/llama", family["llama"]),
        "acme/mid": server.add("acme/mid", family["mid"]),
        "acme/broken": server.add("acme/broken", family["broken"]),
        "acme/gated": server.add("acme/gated", family["base"], gated=True),
        "acme/private": server.add("acme/private", family["base"], status=401),
        "acme/down": server.add("acme/down", family["base"], status=503),
        "acme/slow": server.add("acme/slow", family["base"], delay=3.0),
        "acme/paged": server.add("acme/paged", family["base"], page=1),
    }
    yield server
    server.close()


def sha(hub: Any, repo: str) -> str:
    return str(hub.shas[repo])


def model_repo(
    root: Path,
    weights: str,
    *,
    bases: str = "",
    origin: str = "derived",
    extra: str = "",
    license: str = "apache-2.0",
) -> Path:
    """A model repository holding `weights`' model.safetensors, with a locked manifest."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.join(weights, "model.safetensors"), root)
    (root / "provenance.yaml").write_text(
        f"version: 1\nmodel:\n  name: m\n  license: {license}\n  origin: {origin}\n"
        + (f"base_models:\n{bases}" if bases else "")
        + "artifacts:\n  - path: model.safetensors\n"
        + extra
    )
    done = subprocess.run([GATE, "lock", str(root)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return root


def against(
    root: Path, weights: str, hub: Any, repo: str, relation: str, *args: str, **env: str
) -> tuple[int, list[dict[str, Any]], str]:
    """Check a repository holding `weights` declared as `relation` of the Hub model `repo`."""
    model_repo(root, weights, bases=base_entry(repo, hub.shas[repo], relation))
    return check(root, hub, *args, **env)


def base_entry(repo: str, revision: str | None, relation: str, license: str = "") -> str:
    out = f"  - id: {repo}\n    relation: {relation}\n"
    out += f"    revision: {revision}\n" if revision else ""
    return out + (f"    license: {license}\n" if license else "")


def check(root: Path, hub: Any, *args: str, **env: str) -> tuple[int, list[dict[str, Any]], str]:
    full = dict(os.environ, HF_ENDPOINT=hub.endpoint, **env)
    done = subprocess.run([GATE, "check", str(root), "--format", "json", *args],
                          capture_output=True, text=True, env=full, check=False)  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)["findings"], done.stderr


def by_rule(findings: list[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    return [f for f in findings if f["rule"] == rule]


def rules(findings: list[dict[str, Any]]) -> set[str]:
    return {f["rule"] for f in findings}


# ---------------------------------------------------------------------------- lineage
def test_finetune_of_a_hub_base_is_verified_from_a_small_sample(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    base_sha = sha(hub, "acme/base")
    before = hub.sent["acme/base"]
    root = model_repo(tmp_path, family["finetune"],
                      bases=base_entry("acme/base", base_sha, "finetune"))  # fmt: skip
    rc, findings, _ = check(root, hub)
    assert rc == 0, findings
    (note,) = by_rule(findings, "PG508")
    assert note["severity"] == "note" and "finetune found from a sample" in note["message"]
    assert note["location"]["line"] == 7  # the base model's entry
    size = os.path.getsize(os.path.join(family["base"], "model.safetensors"))
    sent = hub.sent["acme/base"] - before
    assert 0 < sent < 0.1 * size  # the server's own count: ranges only, never the file
    assert "of 8.43 MB" in note["message"]
    assert not rules(findings) & {"PG501", "PG503", "PG505", "PG506", "PG802"}


def test_the_sample_is_fixed_by_the_pinned_revision(family: dict[str, str], hub: Any) -> None:
    from gate.lineage import sampled

    seed = sampled.seed_of([sha(hub, "acme/base")])
    assert (sampled.rows_for(4096, seed) == sampled.rows_for(4096, seed)).all()
    other = sampled.seed_of([sha(hub, "acme/other")])
    assert not (sampled.rows_for(4096, seed) == sampled.rows_for(4096, other)).all()
    assert sampled.seed_of(["a", "b"]) == sampled.seed_of(["b", "a"])  # parents of a merge
    rows = sampled.rows_for(4096, seed)
    assert rows is not None and len(rows) == sampled.ROWS and sampled.rows_for(32, seed) is None


def test_declared_copy_that_is_a_finetune_fails(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    rc, findings, _ = against(tmp_path, family["finetune"], hub, "acme/base", "copy")
    (f,) = by_rule(findings, "PG503")
    assert rc == 1 and "finetune" in f["found"]
    assert any("sampled" in d for d in by_rule(findings, "PG508")[0]["details"] + [f["found"]])


def test_an_unrelated_hub_base_fails(tmp_path: Path, family: dict[str, str], hub: Any) -> None:
    rc, findings, _ = against(tmp_path, family["finetune"], hub, "acme/other", "finetune")
    (f,) = by_rule(findings, "PG506")
    assert rc == 1 and "independent" in f["found"]


def test_a_reupload_is_a_copy_by_lfs_digest_without_reading_the_base(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    before = hub.sent["acme/base"]
    ok = model_repo(tmp_path / "copy", family["base"],
                    bases=base_entry("acme/base", sha(hub, "acme/base"), "copy"))  # fmt: skip
    rc, findings, _ = check(ok, hub)
    assert rc == 0 and not rules(findings) & {"PG501", "PG503", "PG504", "PG508"}, findings
    wrong = model_repo(tmp_path / "ft", family["base"],
                       bases=base_entry("acme/base", sha(hub, "acme/base"), "finetune"))  # fmt: skip
    rc, findings, _ = check(wrong, hub)
    (f,) = by_rule(findings, "PG504")
    assert "byte-identical" in f["message"] and "LFS" in f["found"]
    assert hub.sent["acme/base"] == before  # not one byte of the base's weights


# ---------------------------------------------------------------------------- scratch claims
def scratch(root: Path, weights: str, ref: str) -> Path:
    return model_repo(root, weights, origin="scratch",
                      extra=f"policy:\n  lineage:\n    references: [\"{ref}\"]\n")  # fmt: skip


def test_scratch_claim_that_is_a_hub_model_fails_loudly(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    ref = f"hf://acme/base@{sha(hub, 'acme/base')}"
    rc, findings, _ = check(scratch(tmp_path / "copy", family["base"], ref), hub)
    (f,) = by_rule(findings, "PG502")
    assert rc == 1 and "have the sha256 of a weight file of acme/base@" in f["message"]
    assert f"revision: {sha(hub, 'acme/base')}" in f["hint"]
    rc, findings, _ = check(scratch(tmp_path / "ft", family["finetune"], ref), hub)
    (f,) = by_rule(findings, "PG502")
    assert rc == 1 and f["found"].startswith("finetune of acme/base@")
    assert any("sampled" in d for d in f["details"])


def test_scratch_claim_independent_of_a_hub_model_passes(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    ref = f"hf://acme/base@{sha(hub, 'acme/base')}"
    rc, findings, _ = check(scratch(tmp_path, family["independent"], ref), hub)
    assert rc == 0 and not rules(findings) & {"PG501", "PG502", "PG802"}, findings
    (note,) = by_rule(findings, "PG508")  # independence seen on a sample: said so
    assert note["message"].startswith("acme/base@") and "independent found" in note["message"]
    assert note["location"]["line"] == 13


def test_unpinned_hub_reference_is_pinned_for_you(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    rc, findings, _ = check(scratch(tmp_path, family["independent"], "hf://acme/base@main"), hub)
    (f,) = by_rule(findings, "PG801")
    assert rc == 1 and f"hf://acme/base@{sha(hub, 'acme/base')}" in f["hint"]


# ---------------------------------------------------------------------------- pinning
@pytest.mark.parametrize(("revision", "line"), [("main", 9), (None, 7)])
def test_a_branch_or_missing_revision_is_a_finding_with_the_sha_as_fix(
    tmp_path: Path, family: dict[str, str], hub: Any, revision: str | None, line: int
) -> None:
    root = model_repo(tmp_path, family["finetune"],
                      bases=base_entry("acme/base", revision, "finetune"))  # fmt: skip
    rc, findings, _ = check(root, hub)
    (f,) = by_rule(findings, "PG801")
    assert rc == 1 and f["severity"] == "error" and f["location"]["line"] == line
    assert f["hint"] == f"pin it: `revision: {sha(hub, 'acme/base')}`"
    assert by_rule(findings, "PG508")  # still verified, against the commit the branch names


def test_unpinned_offline_cannot_offer_a_sha(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    root = model_repo(tmp_path, family["finetune"],
                      bases=base_entry("acme/base", "main", "finetune"))  # fmt: skip
    rc, findings, _ = check(root, hub, "--offline")
    (f,) = by_rule(findings, "PG801")
    assert rc == 1 and "could not be looked up" in f["message"] and "offline" in f["message"]


# ---------------------------------------------------------------------------- licenses
def test_a_hub_base_card_license_is_inherited(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    llama = sha(hub, "acme/llama")
    root = model_repo(tmp_path / "a", family["finetune"],
                      bases=base_entry("acme/llama", llama, "finetune"))  # fmt: skip
    rc, findings, _ = check(root, hub)
    (f,) = by_rule(findings, "PG406")
    assert rc == 1 and "llama2" in f["message"] and "README.md" in f["message"]
    root = model_repo(tmp_path / "b", family["finetune"],
                      bases=base_entry("acme/llama", llama, "finetune", "apache-2.0"))  # fmt: skip
    rc, findings, _ = check(root, hub)
    (f,) = by_rule(findings, "PG404")
    assert f["location"]["line"] == 10 and "README.md:2" in f["found"]
    root = model_repo(tmp_path / "c", family["finetune"], license="llama2",
                      bases=base_entry("acme/llama", llama, "finetune"))  # fmt: skip
    rc, findings, _ = check(root, hub)
    assert not rules(findings) & {"PG404", "PG406", "PG409"}


# ---------------------------------------------------------------------------- failures
@pytest.mark.parametrize(
    ("repo", "rule", "text"),
    [
        ("acme/gated", "PG803", "gated"),
        ("acme/private", "PG803", "HTTP 401"),
        ("acme/missing", "PG804", "repository not found"),
        ("acme/down", "PG802", "HTTP 503"),
        ("acme/broken", "PG501", "over the 100000000-byte cap"),
    ],
)
def test_hub_failures_are_located_findings(
    tmp_path: Path, family: dict[str, str], hub: Any, repo: str, rule: str, text: str
) -> None:
    revision = hub.shas.get(repo, UNKNOWN_SHA)
    root = model_repo(tmp_path, family["finetune"], bases=base_entry(repo, revision, "finetune"))
    _, findings, stderr = check(root, hub)
    (f,) = by_rule(findings, rule)
    assert text in f["message"] and f["location"]["line"] == 7, f
    assert not by_rule(findings, "PG508") and not stderr.strip()


def test_an_unknown_revision_is_an_error(tmp_path: Path, family: dict[str, str], hub: Any) -> None:
    root = model_repo(tmp_path, family["finetune"],
                      bases=base_entry("acme/base", UNKNOWN_SHA, "finetune"))  # fmt: skip
    rc, findings, _ = check(root, hub)
    (f,) = by_rule(findings, "PG804")
    assert rc == 1 and "no such revision" in f["message"]


def test_a_stalled_hub_times_out_within_bounds(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    root = model_repo(tmp_path, family["finetune"],
                      bases=base_entry("acme/slow", sha(hub, "acme/slow"), "finetune"))  # fmt: skip
    start = time.monotonic()
    rc, findings, _ = check(root, hub, PROVENANCE_GATE_HUB_TIMEOUT="0.5")
    elapsed = time.monotonic() - start
    (f,) = by_rule(findings, "PG802")
    assert rc == 0 and "timed out" in f["message"] and f["severity"] == "note"
    assert elapsed < 20  # 3 attempts of 0.5 s plus backoff, per request: bounded


def test_strict_lineage_makes_an_unavailable_base_an_error(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    root = model_repo(tmp_path, family["finetune"],
                      bases=base_entry("acme/base", sha(hub, "acme/base"), "finetune"),
                      extra="policy:\n  lineage:\n    strict: true\n")  # fmt: skip
    rc, findings, _ = check(root, hub, "--offline")
    (f,) = by_rule(findings, "PG802")
    assert rc == 1 and f["severity"] == "error" and "base unavailable offline" in f["message"]


def test_a_server_ignoring_range_is_refused_beyond_the_header(
    family: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gate import hubclient as gate_hub

    norange = hubserver.RangeHub()
    try:
        commit = norange.add("acme/base", family["base"], ignore_range=True)
        monkeypatch.setenv("HF_ENDPOINT", norange.endpoint)
        client = gate_hub.HubClient(cache_dir=str(tmp_path))
        (f,) = [f for f in client.files("acme/base", commit) if f.sha256]
        assert len(client.read_range("acme/base", commit, f, 0, 8)) == 8  # the header: fine
        with pytest.raises(gate_hub.HubError, match="ignored a Range request"):
            client.read_range("acme/base", commit, f, f.size - 64, 64)
    finally:
        norange.close()


# ---------------------------------------------------------------------------- caches, offline
def test_offline_without_cache_is_not_checked_never_passed(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    root = model_repo(tmp_path, family["finetune"],
                      bases=base_entry("acme/base", sha(hub, "acme/base"), "finetune"))  # fmt: skip
    count = len(hub.requests)
    for args, env in ((("--offline",), {}), ((), {"HF_HUB_OFFLINE": "1"})):
        rc, findings, _ = check(root, hub, *args, **env)
        (f,) = by_rule(findings, "PG802")
        assert rc == 0 and f["found"].startswith("not checked: base unavailable offline")
        assert not by_rule(findings, "PG508")
    assert len(hub.requests) == count  # offline means offline


def test_a_second_run_offline_reuses_the_cached_metadata_and_ranges(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    root = model_repo(tmp_path, family["finetune"],
                      bases=base_entry("acme/base", sha(hub, "acme/base"), "finetune"))  # fmt: skip
    cache = {"PROVENANCE_GATE_CACHE_DIR": str(tmp_path / "cache")}
    rc, online, _ = check(root, hub, **cache)
    count = len(hub.requests)
    rc2, offline, _ = check(root, hub, "--offline", **cache)
    assert rc == rc2 == 0 and len(hub.requests) == count
    assert [f["message"] for f in by_rule(offline, "PG508")] == [
        f["message"] for f in by_rule(online, "PG508")
    ]


def hf_cache(home: Path, repo: str, commit: str, folder: str, corrupt: bool = False) -> None:
    """A Hugging Face cache as huggingface_hub lays it out: blobs named by sha256 (LFS) or git
    blob id, snapshots/<commit>/ of symlinks, refs/main."""
    top = home / "hub" / f"models--{repo.replace('/', '--')}"
    (top / "blobs").mkdir(parents=True)
    (top / "refs").mkdir()
    (top / "refs" / "main").write_text(commit)
    snap = top / "snapshots" / commit
    snap.mkdir(parents=True)
    for name in os.listdir(folder):
        src = os.path.join(folder, name)
        digest = hubserver.sha256_file(src) if name.endswith(".safetensors") else "b" * 40 + name
        blob = top / "blobs" / digest
        shutil.copyfile(src, blob)
        if corrupt and name.endswith(".safetensors"):
            with open(blob, "r+b") as f:
                f.seek(-4, 2)
                f.write(b"\xff\xff\xff\xff")
        (snap / name).symlink_to(os.path.relpath(blob, snap))


def from_hf_cache(
    tmp_path: Path, family: dict[str, str], hub: Any, relation: str, corrupt: bool = False
) -> tuple[int, list[dict[str, Any]], str]:
    """Check a fine-tune offline, with acme/base only in a Hugging Face cache."""
    home = tmp_path / "hf"
    if not home.exists():
        hf_cache(home, "acme/base", sha(hub, "acme/base"), family["base"], corrupt)
    return against(tmp_path / relation, family["finetune"], hub, "acme/base", relation,
                   "--offline", HF_HOME=str(home))  # fmt: skip


def test_a_base_in_the_hugging_face_cache_is_read_there_whole_offline(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    rc, findings, _ = from_hf_cache(tmp_path, family, hub, "finetune")
    assert rc == 0 and not rules(findings) & {"PG501", "PG502", "PG508", "PG802"}, findings
    rc, findings, _ = from_hf_cache(tmp_path, family, hub, "copy")
    (f,) = by_rule(findings, "PG503")
    assert not any("sampled" in d for d in f["details"])  # every tier, on the whole base


def test_a_corrupted_cached_base_is_not_trusted(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    _, findings, _ = from_hf_cache(tmp_path, family, hub, "finetune", corrupt=True)
    assert by_rule(findings, "PG805")[0]["severity"] == "warning"
    assert by_rule(findings, "PG802")  # and, offline, nothing else to verify with


# ---------------------------------------------------------------------------- lineage command
def test_lineage_command_against_a_hub_reference(family: dict[str, str], hub: Any) -> None:
    uri = f"hf://acme/base@{sha(hub, 'acme/base')}"
    done = subprocess.run(
        [GATE, "lineage", family["finetune"], "-r", uri, "-r", family["independent"], "-f", "json"],
        capture_output=True, text=True, check=False,
        env=dict(os.environ, HF_ENDPOINT=hub.endpoint),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    verdicts = {v["reference"]: v for v in json.loads(done.stdout)["references"]}
    hub_v = verdicts[f"acme/base@{sha(hub, 'acme/base')[:12]}"]
    assert hub_v["relation"] == "finetune" and any("sampled" in n for n in hub_v["notes"])
    assert verdicts[family["independent"]]["relation"] == "independent"
    bad = subprocess.run([GATE, "lineage", family["finetune"], "-r", "hf://acme/missing@main"],
                         capture_output=True, text=True, check=False,
                         env=dict(os.environ, HF_ENDPOINT=hub.endpoint))  # fmt: skip
    assert bad.returncode == 2 and "repository not found" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_init_pins_a_card_base_to_its_current_commit(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    shutil.copy(os.path.join(family["finetune"], "model.safetensors"), tmp_path)
    (tmp_path / "README.md").write_text(
        "---\nlicense: apache-2.0\nbase_model: acme/base\nbase_model_relation: finetune\n---\n"
    )
    done = subprocess.run([GATE, "init", str(tmp_path)], capture_output=True, text=True,
                          check=False, env=dict(os.environ, HF_ENDPOINT=hub.endpoint))  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "provenance.yaml").read_text()
    assert f"    revision: {sha(hub, 'acme/base')}  # acme/base@main when" in text
    rc, findings, _ = check(tmp_path, hub)
    assert rc == 0 and by_rule(findings, "PG508"), findings


def test_an_lfs_pointer_checkout_is_verified_by_digest_alone(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    """A CI checkout without LFS content: the pointer's oid is compared with the Hub's."""
    from tests.helpers import pointer

    for kind, relation in (("base", "copy"), ("finetune", "finetune")):
        root = model_repo(tmp_path / kind, family[kind],
                          bases=base_entry("acme/base", sha(hub, "acme/base"), relation))  # fmt: skip
        weights = root / "model.safetensors"
        weights.write_bytes(pointer(weights.read_bytes()))
        rc, findings, _ = check(root, hub)
        assert rc == 0 and by_rule(findings, "PG209"), findings
        if kind == "base":  # a copy, verified without content on either side
            assert not rules(findings) & {"PG501", "PG504", "PG508"}, findings
        else:
            (f,) = by_rule(findings, "PG501")
            assert "0 of 1 weight files" in f["message"] and "LFS pointer" in f["message"]


def test_the_license_chain_of_a_hub_base_binds_its_derivatives(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    """acme/mid says apache-2.0, but its card's base_model is the Llama 2 model acme/llama."""
    rc, findings, _ = against(tmp_path, family["finetune"], hub, "acme/mid", "finetune")
    (f,) = by_rule(findings, "PG406")
    assert rc == 1 and "llama2" in f["message"] and "acme/llama, base model of acme/mid" in f[
        "message"]  # fmt: skip
    assert "llama2" in f["hint"]


def test_a_paged_listing_is_followed_and_a_bad_id_is_refused(
    tmp_path: Path, family: dict[str, str], hub: Any
) -> None:
    rc, findings, _ = against(tmp_path / "paged", family["finetune"], hub, "acme/paged",
                              "finetune")  # fmt: skip
    assert rc == 0 and by_rule(findings, "PG508"), findings  # 3 pages of one file each
    ref = f"hf://../../etc@{sha(hub, 'acme/base')}"
    rc, findings, _ = check(scratch(tmp_path / "bad", family["independent"], ref), hub)
    (f,) = by_rule(findings, "PG804")
    assert rc == 1 and "not a Hub model id" in f["message"] and f["location"]["line"] == 13
