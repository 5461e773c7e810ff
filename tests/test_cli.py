"""The CLI through the installed console script, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gate
from gate import cli
from gate.cache import DB_NAME
from tests.helpers import HEAD, manifest, raw_st, repo, run, write_st

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_version() -> None:
    r = run("--version")
    assert (r.returncode, r.stdout) == (0, f"provenance-gate, version {gate.__version__}\n")


def test_example_homegrown_fails_with_evidence() -> None:
    r = run("check", str(EXAMPLES / "homegrown"))
    assert r.returncode == 1, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith(
        "provenance.yaml:7:11: error PG502 scratch-contradicted: origin `scratch`"
    )
    assert "16 of 16 weight tensors (100.0% of weight bytes) are bit-identical" in first
    assert "tok_embeddings.weight == known-models/public-base:model.embed_tokens.weight" in r.stdout
    assert (
        r.stdout.splitlines()[-1]
        == "FAIL: 1 error(s), 0 warning(s), 0 note(s); 1 artifact(s) checked"
    )
    assert r.stderr == ""


def test_example_honest_passes() -> None:
    r = run("check", str(EXAMPLES / "honest"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        r.stdout.splitlines()[-1]
        == "PASS: 0 error(s), 0 warning(s), 0 note(s); 1 artifact(s) checked"
    )


def test_json_to_file(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    r = run("check", str(EXAMPLES / "homegrown"), "--format", "json", "--output", str(out))
    assert (r.returncode, r.stdout) == (1, "")
    doc = json.loads(out.read_text())
    assert doc["verdict"] == "fail"
    assert doc["findings"][0]["rule"] == "PG502"


def test_github_format_writes_step_summary(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    r = run(
        "check",
        "examples/homegrown",
        "-f",
        "github",
        cwd=EXAMPLES.parent,
        env={"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_WORKSPACE": str(EXAMPLES.parent)},
    )
    assert r.returncode == 1
    assert r.stdout.startswith(
        "::error file=examples/homegrown/provenance.yaml,line=7,col=11,title=PG502"
    )
    text = summary.read_text()
    assert text.startswith("earlier step\n## ❌ provenance-gate: FAIL")
    assert "| ❌ error | PG502 scratch-contradicted |" in text


@pytest.mark.parametrize("fmt", ["sarif", "markdown"])
def test_other_formats(fmt: str) -> None:
    r = run("check", str(EXAMPLES / "homegrown"), "--format", fmt)
    assert r.returncode == 1
    assert "PG502" in r.stdout


def test_fail_on_never_reports_but_passes() -> None:
    r = run("check", str(EXAMPLES / "homegrown"), "--fail-on", "never")
    assert r.returncode == 0
    assert "PG502" in r.stdout
    assert "PASS" in r.stdout


def test_malformed_manifest_exit_2_located(tmp_path: Path) -> None:
    manifest(tmp_path, "version: 1\nmodel:\n  name: [x\n")
    r = run("check", str(tmp_path))
    assert r.returncode == 2
    assert r.stdout.startswith("provenance.yaml:3:9: error PG101 manifest-syntax: `[` opened here")


def test_nothing_to_check_exit_3(tmp_path: Path) -> None:
    r = run("check", str(tmp_path))
    assert r.returncode == 3
    assert r.stderr.startswith(
        f"provenance-gate: error: no provenance.yaml and no weight files in {tmp_path}"
    )


def test_weights_without_manifest_exit_2_with_hint(tmp_path: Path) -> None:
    write_st(tmp_path / "m.safetensors")
    r = run("check", str(tmp_path))
    assert r.returncode == 2
    assert "hint: run `provenance-gate init`" in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--format", "xml"],
        ["check", "/nonexistent/dir"],
        ["frobnicate"],
        ["check", "--fail-on", "sometimes"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    r = run(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr


def test_unwritable_output(tmp_path: Path) -> None:
    r = run("check", str(EXAMPLES / "honest"), "-o", str(tmp_path / "no" / "dir" / "r.json"))
    assert r.returncode == 2
    assert "cannot write the report" in r.stderr


def test_init_then_lock_then_check(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    r = run("init", str(tmp_path))
    assert r.returncode == 0
    assert r.stdout.splitlines()[0] == "created provenance.yaml"
    assert r.stdout.splitlines()[-2:] == ["wrote provenance.yaml", "wrote provenance.lock.json"]
    assert run("lock", str(tmp_path)).stdout == "up to date\n"
    r = run("check", str(tmp_path))
    assert r.returncode == 1  # `license: unknown` until the user sets it: fail closed
    assert "PG402 license-unknown" in r.stdout
    yaml = tmp_path / "provenance.yaml"
    yaml.write_text(yaml.read_text().replace("license: unknown", "license: apache-2.0"))
    assert run("check", str(tmp_path)).returncode == 0
    write_st(tmp_path / "model.safetensors", seed=5)
    assert run("check", str(tmp_path)).returncode == 1
    r = run("lock", str(tmp_path))
    assert r.returncode == 0
    assert "model.safetensors: sha256 " in r.stdout
    assert run("check", str(tmp_path)).returncode == 0


def test_lock_missing_file_exit_1(tmp_path: Path) -> None:
    manifest(tmp_path, HEAD + "artifacts:\n  - path: gone.safetensors\n")
    r = run("lock", str(tmp_path))
    assert r.returncode == 1
    assert "PG201" in r.stderr


def test_lock_invalid_manifest_exit_2(tmp_path: Path) -> None:
    manifest(tmp_path, "version: 3\n")
    r = run("lock", str(tmp_path))
    assert r.returncode == 2
    assert "PG102" in r.stderr


HOSTILE = {
    "binary-manifest": lambda root: (root / "provenance.yaml").write_bytes(os.urandom(4096)),
    "alias-bomb": lambda root: manifest(
        root,
        "a: &a [1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b,*b]\n",
    ),
    "deep-nesting": lambda root: (root / "provenance.yaml").write_text(
        "a: " + "[" * 5000 + "]" * 5000 + "\n"
    ),
    "huge-manifest": lambda root: (root / "provenance.yaml").write_bytes(b"# x\n" * 400_000),
    "manifest-is-dir": lambda root: (root / "provenance.yaml").mkdir(),
    "manifest-is-fifo": lambda root: os.mkfifo(root / "provenance.yaml"),
    "lying-header": lambda root: (
        (root / "m.safetensors").write_bytes(
            raw_st(b'{"a":{"dtype":"F32","shape":[99999999999],"data_offsets":[0,4]}}', b"\0" * 4)
        ),
        repo(root, "m.safetensors"),
    ),
    "header-length-huge": lambda root: (
        (root / "m.safetensors").write_bytes(raw_st(b"{}", length=2**63)),
        repo(root, "m.safetensors"),
    ),
    "symlink-loop": lambda root: (
        os.symlink("m.safetensors", root / "m.safetensors"),
        manifest(root, HEAD + "artifacts:\n  - path: m.safetensors\n"),
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_inputs_never_traceback(tmp_path: Path, case: str) -> None:
    HOSTILE[case](tmp_path)
    r = run("check", str(tmp_path))
    assert r.returncode in (1, 2), r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "internal error" not in r.stderr


def test_crash_is_exit_4_without_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gate import checks

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(checks, "check", boom)
    assert cli.main(["check", str(EXAMPLES / "honest")]) == 4
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: kaboom" in err
    assert "Traceback" not in err


def test_interrupt_is_exit_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gate import checks

    def stop(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(checks, "check", stop)
    assert cli.main(["check", str(EXAMPLES / "honest")]) == 130


@pytest.mark.parametrize(
    ("depth", "loaded"), [("exact", "[]"), ("full", "['numpy', 'scipy', 'gguf']")]
)
def test_core_never_imports_heavy_modules(depth: str, loaded: str) -> None:
    """The pre-commit depth needs no numeric stack; the full check never needs torch."""
    code = (
        "import sys, gate.cli, gate.checks, gate.init_lock, gate.reporters;"
        "from gate import checks;"
        "checks.check(checks.Target.resolve('examples/honest', None),"
        f" checks.Options(lineage_depth='{depth}'));"
        "heavy = [m for m in ('torch', 'transformers', 'numpy', 'scipy', 'gguf', 'safetensors',"
        " 'huggingface_hub') if m in sys.modules];"
        "print(heavy)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=EXAMPLES.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert r.stdout == loaded + "\n"


def test_version_imports_nothing_but_click() -> None:
    code = "import sys; from gate import cli; sys.argv=['x','--version']\ntry: cli.main()\nexcept SystemExit: pass\nprint(sorted(m for m in ('jsonschema','ruamel','gate.checks') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.endswith("[]\n")


def test_warm_check_skips_hashing_parsing_and_validation(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "homegrown", root)
    env = {"PROVENANCE_GATE_CACHE_DIR": str(tmp_path / "cache")}
    assert run("check", str(root), env=env).returncode == 1  # cold: fills the cache
    code = (
        "import sys; from gate import cli\n"
        f"rc = cli.main(['check', {str(root)!r}])\n"
        "heavy = sorted(m for m in ('ruamel.yaml', 'jsonschema', 'picklescan', 'gate.formats.pickles') if m in sys.modules)\n"
        "print(rc, heavy, file=sys.stderr)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
    )
    assert r.stderr == "1 []\n"  # same verdict, no YAML parser or schema validator loaded


def test_no_cache_flag_and_cache_dir_option(tmp_path: Path) -> None:
    cache = tmp_path / "c"
    r = run("check", str(EXAMPLES / "honest"), "--no-cache", "--cache-dir", str(cache))
    assert r.returncode == 0 and not cache.exists()
    r = run("check", str(EXAMPLES / "honest"), "--cache-dir", str(cache), "-j", "1")
    assert r.returncode == 0 and (cache / DB_NAME).exists()


def test_progress_bar_draws_and_clears() -> None:
    import io

    out = io.StringIO()
    bar = cli.ProgressBar(out, min_bytes=0)
    bar.start(2_000_000_000, 2)
    bar.drawn_at = 0.0  # as if the last redraw was long ago
    bar.advance(1_000_000_000)
    bar.finish()
    text = out.getvalue()
    assert text.startswith("\rhashing 2 file(s) [############            ] 1.00/2.00 GB  ")
    assert "GB/s  ETA" in text
    assert text.endswith("\r\x1b[K")


def test_progress_bar_silent_for_small_jobs() -> None:
    import io

    out = io.StringIO()
    bar = cli.ProgressBar(out)
    bar.start(1000, 1)
    bar.drawn_at = 0.0
    bar.advance(1000)
    bar.finish()
    assert out.getvalue() == ""
