"""Reference packs, indexes and `identify` on small synthetic families (Gaussian Llama-shaped
models: a base, its fine-tune, an independent model), plus hostile packs and index files."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from gate.cli import main
from gate.lineage import identify, index, pack
from gate.lineage.pack import PackError
from gate.scanner import Scanner
from tests.hubserver import llama_family


@pytest.fixture(scope="module")
def fam(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("fam")
    a = llama_family(str(root / "a"), hidden=128, inter=352, vocab=1024, layers=4, seed=1)
    b = llama_family(str(root / "b"), hidden=128, inter=352, vocab=1024, layers=4, seed=2,
                     kinds=("base",))  # fmt: skip
    other = llama_family(str(root / "w"), hidden=96, inter=256, vocab=300, layers=2, seed=3,
                         kinds=("base",))  # fmt: skip
    return {**a, "base-b": b["base"], "other": other["base"]}


@pytest.fixture(scope="module")
def packs(fam: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("packs")
    scanner = Scanner()
    made = {}
    for k in ("base", "base-b", "other"):
        made[k] = str(out / f"{k}{pack.SUFFIX}")
        pack.fingerprint(fam[k], made[k], scanner=scanner, name=k)
    return made


@pytest.fixture
def idx(packs: dict[str, str], tmp_path: Path) -> str:
    folder = str(tmp_path / "index")
    index.add(folder, list(packs.values()))
    return folder


def test_a_pack_is_a_verified_sample_with_its_provenance(
    fam: dict[str, str], packs: dict[str, str]
) -> None:
    got = pack.read(packs["base"])
    doc = got.doc
    assert doc["schema"] == pack.SCHEMA and doc["provenance"]["source"] == os.path.abspath(
        fam["base"]
    )
    assert doc["provenance"]["content_digest"].startswith("sha256:")
    assert doc["counts"]["layers"][1] == 4 and doc["counts"]["layers"][0] >= 2
    sig = got.signature
    assert (sig.model_type, sig.hidden, sig.layers) == ("llama", 128, 4)
    assert len(sig.files) == 1 and "blk.*.ffn_up.weight:352x128" in sig.shapes
    # every sampled matrix keeps ROWS rows with all their columns; small tensors whole
    sample = got.open()
    try:
        for t in sample.model.tensors.values():
            rows = sample.rows[t.name]
            assert t.full_shape is not None
            if rows is None:
                assert t.shape == t.full_shape
            else:
                assert t.shape == (len(rows), *t.full_shape[1:]) and len(rows) == 32
    finally:
        sample.model.close()


def test_a_pack_is_the_same_whoever_writes_it(
    fam: dict[str, str], packs: dict[str, str], tmp_path: Path
) -> None:
    again = pack.fingerprint(fam["base"], str(tmp_path / "x.pack.safetensors"), scanner=Scanner(),
                             name="another name")  # fmt: skip
    assert again.content_digest == pack.read(packs["base"]).content_digest
    assert again.name == "another name"


@pytest.mark.parametrize(
    ("candidate", "top", "relation"),
    [("base", "base", "copy"), ("finetune", "base", "finetune"), ("independent", None, None)],
)
def test_identify_names_the_base_or_no_known_base(
    fam: dict[str, str], idx: str, candidate: str, top: str | None, relation: str | None
) -> None:
    got = identify.identify(fam[candidate], [idx], Scanner())
    assert got.packs == 3
    assert [m.name for m in got.bases][:1] == ([top] if top else [])
    if top:
        m = got.bases[0]
        assert m.verdict.relation == relation and m.verdict.p_value is not None
        assert m.verdict.p_value <= 1e-3
        assert m.same_files == (1 if candidate == "base" else 0)
    # the pre-filter never opened the pack of another width
    assert {m.name for m in (*got.bases, *got.others)} <= {"base", "base-b"}
    assert got.shortlisted == 2


def test_p_values_are_corrected_over_the_whole_index(fam: dict[str, str], idx: str, tmp_path: Path,
                                                     packs: dict[str, str]) -> None:  # fmt: skip
    small = str(tmp_path / "small")
    index.add(small, [packs["base"]])
    one = identify.identify(fam["independent"], [small], Scanner())
    three = identify.identify(fam["independent"], [idx], Scanner())
    (v1,) = [m.verdict for m in one.others]
    (v3,) = [m.verdict for m in three.others if m.name == "base"]
    assert v1.log10_p is not None and v3.log10_p is not None
    assert "3 reference(s)" in v3.p_method and "1 reference(s)" in v1.p_method
    assert v3.log10_p >= v1.log10_p


def test_shortlist_uses_files_vocabulary_and_shapes(packs: dict[str, str]) -> None:
    entries = index.load(os.path.dirname(index.add(os.path.join(os.path.dirname(packs["base"]), "ix"),
                                                   list(packs.values()))[0].entries[0].path)).entries  # fmt: skip
    by = {e.name: e for e in entries}
    base = by["base"].signature
    nothing = pack.Signature("llama", 1, 1, None, None, (), ("x:1",))
    assert index.shortlist(entries, nothing) == []
    only_file = pack.Signature("", None, 0, None, None, base.files, ())
    assert [e.name for e in index.shortlist(entries, only_file)] == ["base"]
    only_vocab = pack.Signature("", None, 0, None, "0" * 64, (), ())
    assert index.shortlist(entries, only_vocab) == []
    shapes = pack.Signature("", None, 0, None, None, (), by["other"].signature.shapes)
    assert [e.name for e in index.shortlist(entries, shapes)] == ["other"]


def test_index_add_list_verify_and_identify_through_the_cli(
    fam: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = str(tmp_path / "base.pack.safetensors")
    assert main(["fingerprint", fam["base"], "-o", p]) == 0
    assert "of the weights" in capsys.readouterr().out
    folder = str(tmp_path / "ix")
    assert main(["index", "add", folder, p]) == 0
    assert main(["index", "list", folder, "-f", "json"]) == 0
    listed = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert [e["name"] for e in listed] == ["base"]
    assert main(["index", "verify", folder]) == 0
    assert main(["identify", fam["finetune"], "--index", folder, "--fail-if-found"]) == 1
    assert "1. base: finetune" in capsys.readouterr().out
    assert main(["identify", fam["independent"], "--index", folder, "--fail-if-found"]) == 0
    assert "no known base" in capsys.readouterr().out
    assert main(["identify", fam["finetune"], "--index", folder, "-f", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["result"] == "known base" and doc["bases"][0]["relation"] == "finetune"
    import jsonschema

    from gate.manifest import schema

    jsonschema.Draft202012Validator(schema("identify.v1.schema.json")).validate(doc)
    assert main(["identify", fam["finetune"], "--index", folder, "-f", "markdown"]) == 0
    assert "| 1 | base" in capsys.readouterr().out
    assert main(["fingerprint", str(tmp_path / "nope"), "-o", p]) == 2


def test_an_adapter_is_not_given_a_base(idx: str, tmp_path: Path, fam: dict[str, str]) -> None:
    folder = tmp_path / "adapter"
    shutil.copytree(fam["finetune"], folder)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "acme/x"}))
    got = identify.identify(str(folder), [idx], Scanner())
    assert not got.found and any("acme/x" in p for p in got.problems)


# ------------------------------------------------------------------ hostile packs and indexes


def _rewrite(src: str, dst: Path, edit: Any = None, data: Any = None) -> str:
    """The pack at src with its document edited (digest NOT recomputed) and/or data replaced."""
    with open(src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    doc = json.loads(header["__metadata__"][pack.META_KEY])
    header["__metadata__"][pack.META_KEY] = json.dumps(doc)
    if edit is not None and edit(doc, header) != "drop":
        header["__metadata__"][pack.META_KEY] = json.dumps(doc)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    dst.write_bytes(struct.pack("<Q", len(raw)) + raw + (body if data is None else data(body)))
    return str(dst)


def _first(doc: dict[str, Any]) -> str:
    return next(k for k, v in doc["tensors"].items() if v["rows"] is not None)


HOSTILE = {
    "tampered data": (None, lambda b: b[:-2] + bytes([b[-2] ^ 1, b[-1]]), "content digest mismatch"),
    "no metadata": (lambda d, h: h.update(__metadata__={"x": "y"}) or "drop", None,
                    "no `provenance_gate.pack` metadata"),
    "wrong schema": (lambda d, h: d.update(schema="other"), None, "does not match its schema"),
    "extra field": (lambda d, h: d.update(code="import os"), None, "does not match its schema"),
    "rows out of range": (lambda d, h: d["tensors"][_first(d)].update(rows=list(range(10**6, 10**6 + 32))),
                          None, "not increasing within"),
    "rows not increasing": (lambda d, h: d["tensors"][_first(d)].update(rows=[5] * 32), None,
                            "not increasing within"),
    "tensor missing from metadata": (lambda d, h: d["tensors"].pop(_first(d)), None, "disagree"),
    "wrong row count": (lambda d, h: d["tensors"][_first(d)].update(rows=[0, 1]), None, "does not hold"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_packs_are_refused_with_the_reason(
    packs: dict[str, str], tmp_path: Path, case: str
) -> None:
    edit, data, message = HOSTILE[case]
    bad = _rewrite(packs["base"], tmp_path / "bad.pack.safetensors", edit, data)
    with pytest.raises(PackError, match=message):
        pack.read(bad)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a pack"),
        (b"\xff" * 8 + b"{}", "not a pack"),
        (struct.pack("<Q", 2) + b"{}", "no `provenance_gate.pack`"),
        (lambda: _meta("{" * 100_000), "not valid JSON"),
        (lambda: _meta('{"a": 1, "a": 2}'), "duplicate key"),
        (lambda: _meta('{"n": NaN}'), "not valid JSON|NaN"),
    ],
)
def test_malformed_pack_files_are_refused(tmp_path: Path, content: Any, message: str) -> None:
    f = tmp_path / "x.pack.safetensors"
    f.write_bytes(content() if callable(content) else content)
    with pytest.raises(PackError, match=message):
        pack.read(str(f))


def _meta(text: str) -> bytes:
    raw = json.dumps({"__metadata__": {pack.META_KEY: text}}).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def test_an_oversized_pack_is_refused_before_it_is_read(
    packs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pack, "MAX_PACK_BYTES", 1000)
    with pytest.raises(PackError, match="over the 1000-byte cap"):
        pack.read(packs["base"])


def test_index_verify_finds_altered_missing_and_unlisted_packs(idx: str, packs: dict[str, str],
                                                               fam: dict[str, str]) -> None:  # fmt: skip
    loaded = index.load(idx)
    assert index.verify(loaded) == []
    first, second = loaded.entries[0], loaded.entries[1]
    with open(first.path, "r+b") as f:  # one byte of tensor data flipped
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    os.remove(second.path)
    shutil.copy(packs["base"], os.path.join(idx, "stray.pack.safetensors"))
    problems = index.verify(index.load(idx))
    assert any(first.file in p and "sha256" in p for p in problems)
    assert any(second.file in p for p in problems)
    assert any("stray.pack.safetensors: a pack the index does not list" in p for p in problems)
    assert main(["index", "verify", idx]) == 1
    # identify skips the altered pack and says so; the others are still compared
    got = identify.identify(fam["finetune"], [idx], Scanner())
    assert any("not compared" in p for p in got.problems)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{", "not a valid index"),
        ('{"schema": "provenance-gate/index/v1"}', "does not match its schema"),
        (None, "leaves the index folder"),
    ],
)
def test_hostile_index_files_are_refused(idx: str, doc: str | None, message: str) -> None:
    path = os.path.join(idx, index.INDEX_FILE)
    if doc is None:
        data = json.loads(Path(path).read_text())
        data["packs"][0]["file"] = "../../etc/passwd"
        doc = json.dumps(data)
    Path(path).write_text(doc)
    with pytest.raises(PackError, match=message):
        index.load(idx)
    assert main(["identify", idx, "--index", idx]) == 2


def test_a_pack_symlinked_out_of_the_index_is_not_opened(idx: str, tmp_path: Path) -> None:
    loaded = index.load(idx)
    e = loaded.entries[0]
    outside = tmp_path / "outside.pack.safetensors"
    shutil.move(e.path, outside)
    os.symlink(outside, e.path)
    with pytest.raises(PackError, match="outside the index folder"):
        e.open()


def test_names_from_packs_are_shown_not_interpreted(
    fam: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pack's name and source are attacker text: a terminal escape in them is printed
    escaped by index list and identify."""
    p = str(tmp_path / f"x{pack.SUFFIX}")
    pack.fingerprint(fam["base"], p, scanner=Scanner(), name="evil\x1b[2J\x1b]0;title\x07")
    folder = str(tmp_path / "ix")
    index.add(folder, [p])
    capsys.readouterr()
    assert main(["index", "list", folder]) == 0
    assert main(["identify", fam["finetune"], "--index", folder, "--no-bundled-index"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "evil" in out
