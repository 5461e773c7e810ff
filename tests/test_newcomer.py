"""A newcomer's first hour (issue 15): each false pass and each confusing message they met,
through the installed console script."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import tomllib
import yaml

import gate
from gate import watch
from tests.helpers import HEAD, artifact_yaml, manifest, pointer, run, write_st

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(15)


def layered(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {"model.embed_tokens.weight": rng.standard_normal((96, 64)).astype(np.float32)}
    for i in range(2):
        p = f"model.layers.{i}."
        out[p + "self_attn.q_proj.weight"] = rng.standard_normal((64, 64)).astype(np.float32)
        out[p + "mlp.up_proj.weight"] = rng.standard_normal((96, 64)).astype(np.float32)
    return out


def tuned(base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v + 0.2 * RNG.standard_normal(v.shape).astype(np.float32) for k, v in base.items()}


def report(root: Path, *extra: str) -> tuple[int, dict[str, list[dict[str, object]]]]:
    out = root.parent / f"{root.name}.json"
    r = run("check", str(root), "--report", f"json:{out}", *extra)
    assert r.returncode in (0, 1), r.stderr
    findings: dict[str, list[dict[str, object]]] = {}
    for f in json.loads(out.read_text())["findings"]:
        findings.setdefault(str(f["rule"]), []).append(f)
    return r.returncode, findings


# 1. a base folder inside the repository --------------------------------------------------------
def test_a_base_folder_inside_the_repository_is_never_the_candidate(tmp_path: Path) -> None:
    base = layered()
    write_st(tmp_path / "base" / "model.safetensors", base)
    (tmp_path / "base" / "config.json").write_text('{"model_type": "llama"}')
    write_st(tmp_path / "model.safetensors", tuned(base))
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    r = run("init", str(tmp_path))
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "provenance.yaml").read_text()
    assert "- path: model.safetensors" in text and "base/model.safetensors" not in text
    assert "references: [base]" in text  # the other model is what a scratch claim is tested on
    assert "base/ holds another model" in r.stderr
    code, found = report(tmp_path)  # the scratch claim meets the fine-tune: a finetune, not a copy
    assert code == 1 and "relation: finetune" in str(found["PG502"][0]["hint"])

    # the trap itself: the base's weights declared as artifacts, the fine-tune declared a copy
    manifest(tmp_path, HEAD.replace("scratch", "derived")
             + "base_models:\n  - path: base\n    relation: copy\n    license: apache-2.0\n"
             + artifact_yaml(tmp_path, "base/model.safetensors", "model.safetensors"))  # fmt: skip
    code, found = report(tmp_path)
    assert code == 1 and "PG503" in found  # declared copy, found finetune
    assert "finetune" in str(found["PG503"][0]["found"])
    assert found["PG214"][0]["severity"] == "note"  # the base's file: checked, not counted
    r = run("init", str(tmp_path))  # an existing manifest: nothing in base/ is added
    assert "base/" not in r.stdout


# 2. an LFS pointer checkout ----------------------------------------------------------------------
def test_a_pointer_whose_oid_is_a_reference_file_contradicts_scratch(tmp_path: Path) -> None:
    write_st(tmp_path / "ref" / "model.safetensors", layered())
    data = (tmp_path / "ref" / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(pointer(data))
    manifest(tmp_path, HEAD + artifact_yaml(tmp_path, "model.safetensors", tensors_digest=False)
             + "policy:\n  lineage:\n    references: [ref]\n")  # fmt: skip
    code, found = report(tmp_path)
    assert code == 1 and found["PG502"][0]["severity"] == "error"
    assert "1 of 1 weight files have the sha256" in str(found["PG502"][0]["message"])


def test_a_pointer_checkout_that_lineage_cannot_read_is_a_warning(tmp_path: Path) -> None:
    write_st(tmp_path / "ref" / "model.safetensors", layered())
    write_st(tmp_path / "model.safetensors", layered(seed=3))
    manifest(tmp_path, HEAD + artifact_yaml(tmp_path, "model.safetensors", tensors_digest=False)
             + "policy:\n  lineage:\n    references: [ref]\n")  # fmt: skip
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(pointer(data))  # a checkout without LFS
    code, found = report(tmp_path)
    (warning,) = found["PG501"]
    assert code == 0 and warning["severity"] == "warning"
    assert "Git LFS pointer" in str(warning["message"])
    code, found = report(tmp_path, "--strict")  # CI
    assert code == 1 and found["PG501"][0]["severity"] == "error"
    assert found["PG209"][0]["severity"] == "error"  # content never read: no pass in CI


def test_a_format_the_gate_cannot_inspect_fails_under_strict(tmp_path: Path) -> None:
    (tmp_path / "model.msgpack").write_bytes(b"\x81\xa1a\x01" + bytes(64))
    manifest(tmp_path, HEAD + artifact_yaml(tmp_path, "model.msgpack", tensors_digest=False)
             + "policy:\n  allowed_formats: [msgpack]\n")  # fmt: skip
    code, found = report(tmp_path)
    assert code == 0 and found["PG306"][0]["severity"] == "note"
    code, found = report(tmp_path, "--strict")
    assert code == 1 and found["PG306"][0]["severity"] == "error"


def test_a_derived_copy_is_settled_from_pointers_and_a_local_base(tmp_path: Path) -> None:
    write_st(tmp_path / "base" / "model.safetensors", layered())
    data = (tmp_path / "base" / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(pointer(data))
    body = (HEAD.replace("scratch", "derived")
            + "base_models:\n  - path: base\n    relation: finetune\n    license: apache-2.0\n"
            + artifact_yaml(tmp_path, "model.safetensors", tensors_digest=False))  # fmt: skip
    manifest(tmp_path, body)
    _, found = report(tmp_path)
    assert "PG504" in found  # every file byte-identical to the base: a copy, not a fine-tune
    manifest(tmp_path, body.replace("relation: finetune", "relation: copy"))
    _, found = report(tmp_path, "--strict")
    assert "PG504" not in found and "PG501" not in found


# 3. an unreachable Hub -----------------------------------------------------------------------------
def test_an_unreachable_hub_passes_by_default_and_fails_under_strict(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors", layered())
    manifest(tmp_path, HEAD.replace("scratch", "derived")
             + "base_models:\n  - id: acme/base\n    revision: " + "a" * 40
             + "\n    relation: finetune\n    license: apache-2.0\n"
             + artifact_yaml(tmp_path, "model.safetensors"))  # fmt: skip
    code, found = report(tmp_path)  # the Hub endpoint refuses (tests/conftest.py)
    assert code == 0 and found["PG802"][0]["severity"] == "note"
    code, found = report(tmp_path, "--strict")
    assert code == 1 and found["PG802"][0]["severity"] == "error"
    assert "--strict" in str(found["PG802"][0]["details"])


# 4. lineage against something that is not a model ----------------------------------------------------
@pytest.mark.parametrize("kind", ["empty folder", "readme", "pointer"])
def test_lineage_against_a_reference_that_is_not_a_model_is_an_error(
    tmp_path: Path, kind: str
) -> None:
    write_st(tmp_path / "cand" / "model.safetensors", layered())
    ref = tmp_path / "ref"
    ref.mkdir()
    if kind == "readme":
        ref = ref / "README.md"
        ref.write_text("# a model card, no weights\n")
    elif kind == "pointer":
        (ref / "model.safetensors").write_bytes(pointer(b"x" * 300_000_000))
    r = run("lineage", str(tmp_path / "cand"), "-r", str(ref), "--fail-if-dependent")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "is not a readable model" in r.stderr
    if kind == "pointer":
        assert "Git LFS pointer" in r.stderr and "size cap" not in r.stderr


# 5. a LICENSE file that is no license -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "declared", "severity"),
    [
        ("Copyright 2026 Acme. All rights reserved.\n", "apache-2.0", "warning"),
        ("MIT License\nCopyright (c) 2026 Acme\nPermission is granted.\n", "apache-2.0", "warning"),
        ("Qwen LICENSE AGREEMENT ...\n", "other", None),  # custom terms: `other` links them
    ],
)
def test_an_unrecognised_license_file_is_named(
    tmp_path: Path, text: str, declared: str, severity: str | None
) -> None:
    write_st(tmp_path / "model.safetensors")
    (tmp_path / "LICENSE").write_text(text)
    extra = "  license_name: qwen\n  license_link: LICENSE\n" if declared == "other" else ""
    manifest(tmp_path, HEAD.replace("apache-2.0", declared).replace("  origin:", extra +
             "  origin:") + artifact_yaml(tmp_path, "model.safetensors"))  # fmt: skip
    _, found = report(tmp_path)
    if severity is None:
        assert "PG411" not in found
        return
    (f,) = found["PG411"]
    assert f["severity"] == severity and "LICENSE" in str(f["message"])


# 6. the distribution name ---------------------------------------------------------------------------
def test_every_install_hint_names_our_distribution() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["name"] == gate.DISTRIBUTION == "model-provenance-gate"
    assert meta["project"]["scripts"]["provenance-gate"] == "gate.cli:main"
    # `provenance-gate` on PyPI is an unrelated project: no hint may install it
    wrong = re.compile(r"(?<!model-)provenance-gate\[|pip install ['\"]?provenance-gate\b")
    files = [ROOT / "README.md", ROOT / "action.yml", *ROOT.glob("docs/*.md"),
             *ROOT.glob("gate/**/*.py"), *ROOT.glob("examples/**/*.yml")]  # fmt: skip
    for path in files:
        found = wrong.search(path.read_text())
        assert found is None, f"{path.relative_to(ROOT)}: {found.group(0)!r}"
    r = run("lineage", str(ROOT / "examples" / "homegrown"), "-r", "hf://acme/x@main")
    assert "provenance-gate[" not in r.stderr.replace("model-provenance-gate[", "")


# 10. the hook and the workflows watch the same files ------------------------------------------------------
def test_the_full_hook_and_the_pull_request_workflow_watch_every_verdict_file() -> None:
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert hooks["provenance-gate-full"]["files"] == watch.hook_files()
    pr = yaml.safe_load((ROOT / "examples/workflows/provenance-pull-request.yml").read_text())
    assert pr[True]["pull_request"]["paths"] == watch.workflow_paths()  # `on` loads as True
    files = re.compile(watch.hook_files())
    for path in ("provenance.yaml", "sub/dir/provenance.yaml", "m/provenance.lock.json",
                 "LICENSE.md", "a/.gitattributes", "x.safetensors.index.json", "w.pt", "q.gguf",
                 "deep/a/b/model.onnx", "COPYING"):  # fmt: skip
        assert files.search(path), path
    assert not files.search("src/train.py")
    for workflow in (ROOT / "examples/workflows").glob("*.yml"):
        text = workflow.read_text()
        assert "@v1" not in text and f"@v{gate.__version__}" in text, workflow.name
        if "uses: provenance-gate/provenance-gate@" in text:  # the Action reads the weights
            assert "lfs: true" in text, workflow.name
            assert f"@v{gate.__version__}\n" in text


# 8 and 9. the README's commands are CI's, and every example names an existing release scheme ----------
def quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start (two commands)", 1)[1].split("```sh\n", 1)[1]
    block = block.split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_the_quick_start_is_what_ci_runs() -> None:
    first, second = quick_start()
    assert first.startswith("python3 -m venv .venv && .venv/bin/pip install -e '.[lineage,hub]'")
    assert "torch" not in first and "npm" not in first and "[test]" not in first
    assert first.endswith("&& .venv/bin/provenance-gate check examples/homegrown")
    assert second == ".ci/run"  # the second command is CI itself
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert (
        ci[-1] == ".venv/bin/python -m pytest --cov=gate"
    )  # and ends in the README's test command
    assert ".venv/bin/python -m pytest" in (ROOT / "README.md").read_text()
    readme = (ROOT / "README.md").read_text()
    version = gate.__version__
    assert "@v1" not in readme and "rev: v1" not in readme
    assert f"rev: v{version}" in readme and f"provenance-gate@v{version}" in readme
    assert f"## {version}" in (ROOT / "CHANGELOG.md").read_text()


@pytest.mark.slow  # a fresh virtualenv and a pip install
def test_the_first_quick_start_command_on_a_fresh_clone(tmp_path: Path) -> None:
    import subprocess

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    for rel in ("gate", "examples", "pyproject.toml", "README.md"):  # this working tree's state
        src, dst = ROOT / rel, clone / rel
        subprocess.run(["rm", "-rf", str(dst)], check=True)
        subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    first, _ = quick_start()
    r = subprocess.run(["bash", "-c", first], cwd=clone, capture_output=True, text=True,
                       timeout=900, check=False)  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr  # the example's copy is caught
    assert "PG502 scratch-contradicted" in r.stdout
    assert not list((clone / ".venv").glob("lib/python*/site-packages/torch"))  # small


# 12. messages -----------------------------------------------------------------------------------------------
def test_yaml_and_schema_errors_speak_yaml(tmp_path: Path) -> None:
    (tmp_path / "provenance.yaml").write_text(
        "version: 1\nmodel:\n  name: x\n  license: mit\n  origin: scratch\nartifacts: [\n"
        "  {path: a.safetensors}\npolicy:\n  allowed_formats: [safetensors]\n"
    )
    r = run("check", str(tmp_path))
    assert r.returncode == 2
    assert "provenance.yaml:6:12: error PG101" in r.stdout  # where the `[` was opened
    assert "`[` opened here is not closed" in r.stdout
    (tmp_path / "provenance.yaml").write_text("")
    r = run("check", str(tmp_path))
    assert "the manifest is empty" in r.stdout and "None" not in r.stdout
    (tmp_path / "provenance.yaml").write_text("version: 1\nmodel:\n  name: [1]\n  license: mit\n"
                                              "  origin: scrotch\n")  # fmt: skip
    r = run("check", str(tmp_path))
    assert "model.name: expected a string, found a list" in r.stdout
    assert "model.origin: `scrotch` is not one of `scratch`, `derived`" in r.stdout
    assert "'" not in "".join(line for line in r.stdout.splitlines() if "PG102" in line)


def test_markdown_keeps_hints_and_color_survives_a_pipe(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    manifest(tmp_path, HEAD + "artifacts:\n  - path: model.safetensors\n")
    r = run("check", str(tmp_path), "-f", "markdown")
    assert "**Fix:** run \\`provenance-gate lock\\`" in r.stdout  # escaped for Markdown
    assert "\x1b[31;1merror" in run("check", str(tmp_path), "--color").stdout  # piped here
    assert "\x1b[" not in run("check", str(tmp_path)).stdout


def test_lineage_words_a_one_bit_edit_and_a_copy_truthfully(tmp_path: Path) -> None:
    base = layered()
    write_st(tmp_path / "base" / "model.safetensors", base)
    write_st(tmp_path / "copy" / "model.safetensors", base)
    edited = {k: v.copy() for k, v in base.items()}
    edited["model.layers.0.self_attn.q_proj.weight"].view(np.uint32)[0, 0] ^= 1
    write_st(tmp_path / "edit" / "model.safetensors", edited)
    r = run("lineage", str(tmp_path / "edit"), "-r", str(tmp_path / "base"))
    assert "finetune of" in r.stdout and "1 of 4096 values, in place" in r.stdout
    assert "permuted, scaled or rotated" not in r.stdout
    r = run("lineage", str(tmp_path / "copy"), "-r", str(tmp_path / "base"))
    assert "identical weights" in r.stdout and "mean_aligned_cosine 1.0" in r.stdout
    assert "cosine 0.0" not in r.stdout


def test_init_says_what_a_person_must_decide(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    with open(tmp_path / "training_args.bin", "wb") as f:
        pickle.dump({"lr": 1e-4}, f)
    (tmp_path / "README.md").write_text("---\nlicense: mit\nbase_model: acme/base\n---\n")
    r = run("init", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "base model acme/base: its current commit could not be looked up" in r.stderr
    assert "training_args.bin: declared, but `check` will refuse it" in r.stderr
    assert "no base_model_relation" in r.stderr
    (tmp_path / "README.md").unlink()
    (tmp_path / "provenance.yaml").unlink()
    r = run("init", str(tmp_path))
    assert "model.origin: scratch, because README.md front matter names no base_model" in r.stderr
