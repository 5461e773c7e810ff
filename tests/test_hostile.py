"""Hostile repositories, through the installed console script: whatever a common loader would
execute is refused, whatever its name or disguise; hostile inputs end in located findings within
seconds and bounded memory, reports are always written, and nothing the gate prints can command
a CI runner or rewrite a terminal. Each class of attack is a family of cases."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests import oracle
from tests.helpers import HEAD, SCRIPT, artifact_yaml, manifest, raw_st, run, sha, write_st

torch = pytest.importorskip("torch")  # .ci/run installs torch==2.13.0
PERMISSIVE = f"policy:\n  allowed_formats: {oracle.PERMISSIVE}\n"


def declared(root: Path, name: str, data: bytes, policy: str = "") -> Path:
    """A repository whose manifest truthfully declares one file (size and sha256)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)
    manifest(root, HEAD + artifact_yaml(root, name, tensors_digest=False) + policy)
    return root


def check_json(root: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run check with a JSON report file beside the text on stdout; both must exist."""
    report = root.parent / f"{root.name}-report.json"
    r = run("check", str(root), "--no-cache", "--report", f"json:{report}", *extra)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    return r, json.loads(report.read_text())


def errors_of(doc: dict[str, Any]) -> list[str]:
    return sorted({f["rule"] for f in doc["findings"] if f["severity"] == "error"})


def marker_payload(tmp_path: Path) -> tuple[bytes, Path]:
    marker = tmp_path / "pwned"
    return f"cos\nsystem\n(S'touch {marker}'\ntR.".encode(), marker


# ------------------------------------------------------------------ 1. polyglots
@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.safetensors", "weights.dat"])
@pytest.mark.parametrize("policy", ["", PERMISSIVE])
def test_safetensors_pickle_polyglot_is_refused_in_every_policy(
    tmp_path: Path, name: str, policy: str
) -> None:
    payload, marker = marker_payload(tmp_path)
    data = oracle.safetensors_polyglot(payload)
    from safetensors.numpy import load

    assert list(load(data)) == ["t"]  # the reference parser accepts it as safetensors
    r, doc = check_json(declared(tmp_path / "repo", name, data, policy))
    assert r.returncode == 1
    assert errors_of(doc) == ["PG310"]
    (f,) = [f for f in doc["findings"] if f["rule"] == "PG310"]
    assert "valid as safetensors and also a pickle that imports os.system" in f["message"]
    assert f["location"]["line"] == 7  # the artifact's path line
    assert not marker.exists()


def test_tar_pickle_polyglot_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"  # named relative: a tar name field holds 100 bytes
    payload = f"cos\nsystem\n(S'touch {marker.name}'\ntR.".encode()
    r, doc = check_json(declared(tmp_path / "repo", "a.tar", oracle.tar_name_polyglot(payload)))
    assert r.returncode == 1 and "PG310" in errors_of(doc)
    assert not marker.exists()


# ------------------------------------------------------------------ 2. pickles without magic
@pytest.mark.parametrize("protocol", [0, 1])
@pytest.mark.parametrize("name", ["weights.dat", "notes.txt", "tokenizer.model"])
def test_pickles_without_magic_are_pickles_whatever_their_name(
    tmp_path: Path, protocol: int, name: str
) -> None:
    data = pickle.dumps(oracle.Call(os.system, "true"), protocol=protocol)
    assert data[:1] != b"\x80"
    _, doc = check_json(declared(tmp_path / "default", name, data))
    assert errors_of(doc) == ["PG302"]
    assert [a["format"] for a in doc["artifacts"]] == ["pickle"]
    _, doc = check_json(declared(tmp_path / "allowed", name, data, PERMISSIVE))
    assert errors_of(doc) == ["PG307"]
    undeclared = tmp_path / "undeclared"
    undeclared.mkdir()
    (undeclared / name).write_bytes(data)
    manifest(undeclared, HEAD)
    _, doc = check_json(undeclared)
    (f,) = [f for f in doc["findings"] if f["rule"] == "PG206"]
    assert "its content is pickle" in f["message"] and "posix.system" in f["message"]


@pytest.mark.parametrize(
    "where", ["ignored", "base folder"], ids=["ignore-is-no-escape", "inside-a-base-folder"]
)
def test_executable_files_outside_the_artifacts_are_errors(tmp_path: Path, where: str) -> None:
    data = pickle.dumps(oracle.Call(os.system, "true"), protocol=0)
    write_st(tmp_path / "model.safetensors")
    if where == "ignored":
        (tmp_path / "ckpt").mkdir()
        (tmp_path / "ckpt" / "optimizer.pt").write_bytes(data)
        extra = "ignore: ['ckpt/**']\n"
    else:
        write_st(tmp_path / "base" / "model.safetensors", seed=1)
        (tmp_path / "base" / "extra.bin").write_bytes(data)
        extra = ""
    body = HEAD.replace("origin: scratch", "origin: derived") if where != "ignored" else HEAD
    bases = "base_models:\n  - path: base\n    relation: finetune\n" if where != "ignored" else ""
    manifest(tmp_path, body + bases + artifact_yaml(tmp_path, "model.safetensors") + extra)
    _, doc = check_json(tmp_path, "--lineage-depth", "exact")
    (f,) = [f for f in doc["findings"] if f["rule"] == "PG311"]
    assert "posix.system" in f["message"] and f["severity"] == "error"


def test_clean_pickles_that_are_ignored_pass(tmp_path: Path) -> None:
    """Only what would run code is reported outside the artifacts: an ignored training
    checkpoint of plain tensors is not a finding."""
    torch.save({"w": torch.ones(2)}, tmp_path / "optimizer.pt")
    write_st(tmp_path / "model.safetensors")
    manifest(tmp_path, HEAD + artifact_yaml(tmp_path, "model.safetensors") + "ignore: ['*.pt']\n")
    r, doc = check_json(tmp_path)
    assert r.returncode == 0 and errors_of(doc) == []


# ------------------------------------------------------------------ 3. zip parser differentials
def torch_zip(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def python_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


ZIPS = {
    "prepended data": lambda: b"JUNK" * 8 + torch_zip({"w": torch.ones(2)}),
    "two archives": lambda: torch_zip({"w": torch.ones(2)}) + python_zip({"a.pkl": b"N."}),
    "appended data": lambda: torch_zip({"w": torch.ones(2)}) + b"\0" * 10,
    "duplicate names": lambda: oracle.dup_zip(b"\x80\x02N.", b"\x80\x02N."),
    "bytes between entries": lambda: _gap_zip(),
}


def _gap_zip() -> bytes:
    data = bytearray(python_zip({"a.pkl": b"\x80\x02N.", "b.pkl": b"\x80\x02N."}))
    second = data.find(b"PK\x03\x04", 4)
    data[second:second] = b"HIDDEN"
    for pos in (data.rfind(b"PK\x01\x02"), data.rfind(b"PK\x05\x06")):  # shift the offsets
        if data[pos : pos + 4] == b"PK\x01\x02":
            (off,) = struct.unpack("<I", data[pos + 42 : pos + 46])
            data[pos + 42 : pos + 46] = struct.pack("<I", off + 6)
        else:
            (off,) = struct.unpack("<I", data[pos + 16 : pos + 20])
            data[pos + 16 : pos + 20] = struct.pack("<I", off + 6)
    return bytes(data)


@pytest.mark.parametrize("case", sorted(ZIPS))
@pytest.mark.parametrize("policy", ["", PERMISSIVE])
def test_ambiguous_zips_are_refused(tmp_path: Path, case: str, policy: str) -> None:
    r, doc = check_json(declared(tmp_path / "repo", "model.bin", ZIPS[case](), policy))
    assert r.returncode == 1
    assert errors_of(doc) == (["PG308"] if policy else ["PG302"])
    text = json.dumps(doc)
    assert "zip archive" in text or "not a valid pickle" in text


def test_a_checkpoint_torch_refuses_after_the_scan_passed_is_an_error(tmp_path: Path) -> None:
    """The static scan and torch's restricted loader disagree: an error (PG312), not a note."""
    whole = zipfile.ZipFile(io.BytesIO(torch_zip({"w": torch.ones(3)})))
    data = python_zip(
        {i.filename: whole.read(i) for i in whole.infolist() if not i.filename.endswith("data/0")}
    )
    r, doc = check_json(declared(tmp_path / "repo", "model.pt", data, PERMISSIVE))
    assert r.returncode == 1 and errors_of(doc) == ["PG312"]
    (f,) = [f for f in doc["findings"] if f["rule"] == "PG312"]
    assert "restricted loader" in f["message"] and f["location"]["line"] == 7


# ------------------------------------------------------------------ 4. legacy tar checkpoints
@pytest.mark.parametrize("policy", ["", PERMISSIVE])
def test_legacy_tar_checkpoints_are_refused_in_every_policy(tmp_path: Path, policy: str) -> None:
    data = oracle.tar_file([("storages", pickle.dumps(0, 2)), ("tensors", pickle.dumps(0, 2)),
                        ("pickle", pickle.dumps({"w": 1}, 2))])  # fmt: skip
    r, doc = check_json(declared(tmp_path / "repo", "model.tar", data, policy))
    assert r.returncode == 1
    assert "legacy torch tar checkpoint" in json.dumps(doc)
    assert errors_of(doc) == (["PG308"] if policy else ["PG302"])


# ------------------------------------------------------------------ 5. numpy object arrays
@pytest.mark.parametrize("descr", ["'|O'", "'O'", "'object'", "'<O'", "[('a', '<f4'), ('b', 'O')]",
                                   "(('O', (2,)))", "'floaty'"])  # fmt: skip
def test_object_arrays_in_every_spelling_are_pickles(tmp_path: Path, descr: str) -> None:
    data = oracle.npy_file(descr, pickle.dumps([oracle.Call(os.system, "true")], 2))
    _, doc = check_json(declared(tmp_path / "repo", "arr.npy", data, PERMISSIVE))
    assert errors_of(doc) == ["PG307"], descr


def test_plain_arrays_pass_when_numpy_is_allowed(tmp_path: Path) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 3), dtype=[("a", "<f4"), ("b", "<i8", (2,))]))
    r, doc = check_json(declared(tmp_path / "repo", "arr.npy", buf.getvalue(), PERMISSIVE))
    assert errors_of(doc) == [] and r.returncode == 0


# ------------------------------------------------------------------ 6. extension opcodes
@pytest.mark.parametrize("op", [b"\x82\x01", b"\x83\x01\x00", b"\x84\x01\x00\x00\x00"])
def test_extension_registry_opcodes_are_refused(tmp_path: Path, op: bytes) -> None:
    data = b"\x80\x02" + op + b")R."
    _, doc = check_json(declared(tmp_path / "repo", "model.bin", data, PERMISSIVE))
    assert errors_of(doc) == ["PG307"]
    assert "extension code 1 (dangerous)" in json.dumps(doc)


# ------------------------------------------------------------------ 7-11. bounded, never a crash
def measured(*args: str) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """The console script's result, wall seconds and peak RSS in MB (of that process alone)."""
    code = (
        "import resource, subprocess, sys, time; t = time.perf_counter();"
        " r = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        " print(r.returncode, time.perf_counter() - t,"
        " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); print(r.stderr)"
    )
    # The bounds are the gate's, not a tracer's: `pytest --cov` runs every child process under
    # coverage (COVERAGE_PROCESS_CONFIG), which made the nested-array GGUF take 36 s, not 5
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    r = subprocess.run([sys.executable, "-c", code, str(SCRIPT), *args], capture_output=True,
                       text=True, timeout=300, check=True, env=env)  # fmt: skip
    first, _, stderr = r.stdout.partition("\n")
    rc, seconds, mb = first.split()
    done = subprocess.CompletedProcess(args, int(rc), "", stderr)
    return done, float(seconds), float(mb)


def one_file_repo(root: Path, name: str, data: bytes) -> Path:
    root.mkdir()
    (root / name).write_bytes(data)
    manifest(root, HEAD + f"artifacts:\n  - path: {name}\n    size: {len(data)}\n"
                         f"    sha256: {sha(data)}\n")  # fmt: skip
    return root


def zero_tensors(n: int) -> bytes:
    return raw_st(
        {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(n)}
    )


STALLS = {  # (file name, bytes, expected rule, message fragment)
    "huge dimensions": ("m.safetensors", raw_st(
        {"a": {"dtype": "F32", "shape": [2**63] * 30000, "data_offsets": [0, 4]}}, b"\0" * 4),
        "PG304", "needs more bytes than the file holds"),
    "zero-size tensor flood": ("m.safetensors", zero_tensors(200_000), "PG304",
                               "more than 131074 JSON objects"),
    "integer of 5000 digits": ("m.safetensors", raw_st(
        b'{"a":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,4]}}', b"\0" * 4),
        "PG304", "an integer of 5000 digits"),
    "lone surrogate tensor name": ("m.safetensors", raw_st(
        b'{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4),
        "PG304", "not valid Unicode"),
    "lzma dictionary of 1.4 GB": ("m.bin", bytes.fromhex("5d0000934e554d5059010050") + b"K\x03\x04]\x00",
        "PG302", "needs more than 64 MiB to decode"),
    "gguf nested arrays": ("m.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
        + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 9, 2_000_000)
        + struct.pack("<IQ", 0, 0) * 2_000_000 + b"\0" * 8, None, "a valid header: it passes"),
}  # fmt: skip


@pytest.mark.slow  # time and memory bounds, measured around a separate process
@pytest.mark.parametrize("case", sorted(STALLS))
def test_hostile_headers_end_in_findings_within_bounds(tmp_path: Path, case: str) -> None:
    name, data, rule, fragment = STALLS[case]
    root = one_file_repo(tmp_path / "repo", name, data)
    report = tmp_path / "report.json"
    r, seconds, mb = measured("check", str(root), "--no-cache", "--report", f"json:{report}")
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    doc = json.loads(report.read_text())
    if rule is None:
        assert (r.returncode, errors_of(doc)) == (0, []), fragment
    else:
        assert r.returncode == 1 and rule in errors_of(doc)
        assert fragment in json.dumps(doc)
    # Generous bounds (the closing note has the figures): before the fix, minutes and gigabytes.
    assert seconds < 30 and mb < 900, (seconds, mb)


@pytest.mark.slow  # 300 folders and two full runs, with a time bound
def test_many_ignore_patterns_cost_seconds_and_are_capped(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    for i in range(300):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / ("a" * 60 + ".txt")).write_text("x")
    hostile = ["*a*a*a*a*a*a*a*a*a*a*a*b", "**/**/**/**/**/**/**/**/x", "a?" * 100 + "*"]
    patterns = [hostile[i % 3] + str(i) for i in range(256)]
    body = HEAD + artifact_yaml(tmp_path, "model.safetensors")
    manifest(tmp_path, body + "ignore: " + json.dumps(patterns) + "\n")
    t = time.perf_counter()
    r, _ = check_json(tmp_path)
    assert r.returncode == 0 and time.perf_counter() - t < 30
    manifest(tmp_path, body + "ignore: " + json.dumps([*patterns, "x"]) + "\n")
    r = run("check", str(tmp_path), "--no-cache")
    assert r.returncode == 2 and "PG102" in r.stdout and "ignore" in r.stdout


EXIT4 = {  # cases that ended in "internal error" (exit 4, no report) before
    "lock file integer": ({"provenance.lock.json": '{"lock_version": 1, "x": ' + "9" * 5000 + "}"},
                          "PG104"),
    "shard index integer": ({"m.safetensors.index.json": '{"weight_map": {}, "n": '
                             + "9" * 5000 + "}"}, "PG221"),
    "file name not UTF-8": ({b"w\xff.bin": b"\0"}, "PG206"),
    "card value lone surrogate": ({"README.md": '---\nlicense: "\\ud800"\n---\n'}, "PG404"),
    "card base_model a number": ({"README.md": "---\nlicense: mit\nbase_model: 5\n---\n"},
                                 "PG602"),
    "card base_model a mapping": ({"README.md": "---\nlicense: mit\nbase_model: {a: 1}\n---\n"},
                                  "PG602"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(EXIT4))
def test_former_internal_errors_are_findings_and_reports_are_written(
    tmp_path: Path, case: str
) -> None:
    files, rule = EXIT4[case]
    write_st(tmp_path / "model.safetensors")
    for name, content in files.items():
        path = tmp_path / os.fsdecode(name) if isinstance(name, bytes) else tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    manifest(
        tmp_path, HEAD.replace("apache-2.0", "mit") + artifact_yaml(tmp_path, "model.safetensors")
    )
    reports = {fmt: tmp_path.parent / f"out.{fmt}" for fmt in ("github", "sarif", "markdown")}
    specs = [f"--report={fmt}:{path}" for fmt, path in reports.items()]
    r, doc = check_json(tmp_path, *specs)  # text on standard output, json, and these three
    assert r.returncode == 1 and r.stdout.endswith("artifact(s) checked\n")
    assert rule in errors_of(doc), doc["findings"]
    for path in reports.values():
        assert path.read_bytes().decode("utf-8")  # written, and valid UTF-8


def test_lone_surrogates_in_the_manifest_are_located_schema_errors(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    manifest(tmp_path, HEAD + 'artifacts:\n  - path: "m\\ud800.safetensors"\n')
    r = run("check", str(tmp_path), "-f", "json")
    assert r.returncode == 2
    (f,) = json.loads(r.stdout)["findings"]
    assert (f["rule"], f["location"]["line"]) == ("PG102", 7)
    assert "not valid Unicode" in f["message"]


# ------------------------------------------------------------------ 12-16. output integrity
HOSTILE_NAMES = ["##[stop-commands]tok.bin", "::error::forged.bin", "x\x1b[2J\rhide.bin",
                 "<!-- a.bin", "# heading.bin", "\u202egnp.bin", "a|b`c*d.bin"]  # fmt: skip


@pytest.fixture
def hostile_repo(tmp_path: Path) -> Path:
    write_st(tmp_path / "model.safetensors")
    for name in HOSTILE_NAMES:
        write_st(tmp_path / name, seed=3)
    (tmp_path / "README.md").write_text(
        "---\nlicense: mit\nbase_model: ['##[notice]forged', '::warning::x']\na: &x 1\nb: &x 2\n---\n"
    )  # a reused anchor: ruamel warns, quoting the card
    manifest(
        tmp_path, HEAD.replace("apache-2.0", "mit") + artifact_yaml(tmp_path, "model.safetensors")
    )
    return tmp_path


def command_lines(text: str) -> list[str]:
    """Lines a GitHub runner would execute: `::` after leading space, `##[` anywhere."""
    return [line for line in text.splitlines() if line.lstrip().startswith("::") or "##[" in line]


@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "markdown", "github"])
def test_nothing_printed_can_command_the_runner(hostile_repo: Path, fmt: str) -> None:
    summary = hostile_repo.parent / "summary.md"
    r = run("check", str(hostile_repo), "-f", fmt, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert r.returncode == 1
    assert r.stderr == ""  # library warnings quoting the card are not printed
    commands = command_lines(r.stdout)
    if fmt == "github":  # the gate's own annotations, one per finding, nothing else
        assert len(commands) == len(
            [line for line in r.stdout.splitlines() if line.startswith("::")]
        )
        assert all(line.startswith(("::error ", "::warning ", "::notice ")) for line in commands)
        assert not any("##[" in line for line in commands)
        assert not command_lines(summary.read_text())
    else:
        assert commands == []
    if fmt in ("json", "sarif"):  # JSON escapes keep every value exactly
        assert "##[stop-commands]tok.bin" in json.dumps(json.loads(r.stdout), ensure_ascii=False)


def test_markdown_cannot_add_headings_tags_or_hide_the_table(hostile_repo: Path) -> None:
    r = run("check", str(hostile_repo), "-f", "markdown")
    rows = [line for line in r.stdout.splitlines() if "PG206" in line]
    assert len(rows) == len(HOSTILE_NAMES)  # one table row per file: nothing broke the table
    assert all(line.startswith("| ") and line.count(" | ") == 5 for line in rows)
    assert "<!--" not in r.stdout and "\x1b" not in r.stdout and "\r" not in r.stdout
    assert not any(line.startswith("#") for line in r.stdout.splitlines()[1:])
    assert "&lt;\\!-- a.bin" in r.stdout or "&lt;!-- a.bin" in r.stdout


def test_terminal_output_shows_control_characters_escaped(hostile_repo: Path) -> None:
    r = run("check", str(hostile_repo))
    assert "\x1b" not in r.stdout and "\r" not in r.stdout and "\u202e" not in r.stdout
    assert "x\\x1b[2J\\x0dhide.bin" in r.stdout and "\\u202egnp.bin" in r.stdout


def test_a_relative_path_with_a_colon_is_not_absolute(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    data = raw_st({})
    one_file_repo(root, "a: b.safetensors", data)
    manifest(root, HEAD + f'artifacts:\n  - path: "a: b.safetensors"\n    size: {len(data)}\n'
                          f"    sha256: {sha(data)}\n")  # fmt: skip
    _, doc = check_json(root)
    assert "PG202" not in errors_of(doc)
    assert [a["path"] for a in doc["artifacts"]] == ["a: b.safetensors"]


# ------------------------------------------------------------------ 13. links out of the repo
@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "provenance.yaml").write_text(HEAD + "secret: '##[notice]leaked'\n")
    (out / "lock.json").write_text('{"lock_version": 1, "artifacts": {"leaked": {}}}')
    (out / "README.md").write_text("---\nlicense: leaked-card\n---\n")
    (out / "LICENSE").write_text("leaked license text")
    (out / "weights.dat").write_bytes(pickle.dumps(oracle.Call(os.system, "true"), 0))
    return out


def test_a_manifest_linking_outside_the_repository_is_refused(
    tmp_path: Path, outside: Path
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    os.symlink(outside / "provenance.yaml", root / "provenance.yaml")
    r = run("check", str(root))
    assert r.returncode == 2 and "leaked" not in r.stdout + r.stderr
    assert "symlink resolving outside the repository" in r.stderr


@pytest.mark.parametrize(
    ("link", "target", "rule"),
    [("provenance.lock.json", "lock.json", "PG104"), ("README.md", "README.md", "PG202"),
     ("LICENSE", "LICENSE", "PG202")],
)  # fmt: skip
def test_lock_card_and_license_linking_outside_are_refused(
    tmp_path: Path, outside: Path, link: str, target: str, rule: str
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    manifest(root, HEAD)
    os.symlink(outside / target, root / link)
    r, doc = check_json(root, "-f", "github")
    assert rule in errors_of(doc)
    assert "leaked" not in r.stdout.replace(str(outside), "")  # its content never echoed


def test_undeclared_links_outside_are_never_opened(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    manifest(root, HEAD)
    os.symlink(outside / "weights.dat", root / "notes.dat")  # a pickle, but outside
    _, doc = check_json(root)
    assert errors_of(doc) == []  # not opened, so not sniffed: nothing reported about it


def test_diff_echoes_no_command_from_a_hostile_base_revision(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    manifest(tmp_path, HEAD + '"::error::k ##[notice]x": &a 1\nb: &a 2\n')  # key, reused anchor
    git("add", ".")
    git("commit", "-qm", "base")
    manifest(tmp_path, HEAD)
    r = run("diff", str(tmp_path), "--base", "HEAD")
    assert r.stderr == "" and "PG706" in r.stdout
    assert command_lines(r.stdout) == []


@pytest.mark.slow  # the real loaders, in subprocesses
@pytest.mark.parametrize("method", ["xz", "bz2", "lzma"])
def test_a_compressed_pickle_with_a_corrupt_tail_still_counts(tmp_path: Path, method: str) -> None:
    """Found by fuzz/oracle.py: two bytes after a whole compressed stream. Asked for more than
    the stream holds, a decompressor tries a second stream and fails; joblib's unpickler asks
    only for what it needs and runs the payload first. A scan that read ahead saw only the
    error. Verified against the real loader here."""
    (tmp_path / "markers").mkdir()  # the harness empties this folder around every load
    marker = tmp_path / "markers" / "pwned"
    data = oracle.joblib_dump(oracle.Call(os.system, f"touch {marker}"), method) + b"\x80\x02"
    path = tmp_path / "files" / "m.joblib"
    path.parent.mkdir()
    path.write_bytes(data)
    ran, _ = oracle.executed([(path, str(marker))], tmp_path)
    assert "joblib.load" in ran[str(path)]  # the loader really runs it
    c = oracle.Candidate("m.joblib", method, data, str(marker))
    verdict = oracle.gate_refuses(tmp_path / "gate", c)
    assert all(verdict.values()), verdict
    assert "PG311" in verdict["ignored"]


def test_zip_entries_with_a_bad_crc_are_refused_without_a_crash(tmp_path: Path) -> None:
    data = bytearray(python_zip({"archive/data.pkl": pickle.dumps({"w": 1}, 2), "x": b"1"}))
    central = data.find(b"PK\x01\x02")
    data[central + 16 : central + 20] = data[14:18] = b"\0\0\0\0"  # the CRC, both copies
    r, doc = check_json(declared(tmp_path / "repo", "model.bin", bytes(data), PERMISSIVE))
    assert r.returncode == 1 and errors_of(doc) == ["PG308"]
    assert "BadZipFile" in json.dumps(doc)
