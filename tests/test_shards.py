from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.helpers import check, errors, pointer, repo, rules_of, write_st

INDEX = "model.safetensors.index.json"
S1, S2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def sharded(root: Path, weight_map: dict[str, str] | None = None) -> Path:
    write_st(root / S1, {"a": np.arange(4, dtype=np.float32), "b": np.arange(3, dtype=np.float32)})
    write_st(root / S2, {"c": np.arange(5, dtype=np.float32)})
    wm = weight_map if weight_map is not None else {"a": S1, "b": S1, "c": S2}
    (root / INDEX).write_text(
        json.dumps({"metadata": {"total_size": 48}, "weight_map": wm}, indent=2)
    )
    return repo(root, S1, S2)


def test_consistent_index_passes(tmp_path: Path) -> None:
    assert errors(check(sharded(tmp_path))) == []


def test_index_names_missing_shard(tmp_path: Path) -> None:
    root = sharded(tmp_path, {"a": S1, "b": S1, "c": S2, "d": "model-00003-of-00003.safetensors"})
    report = check(root)
    assert "PG222" in errors(report)
    located = [f for f in report.findings if f.rule == "PG222" and "00003" in f.message]
    assert located
    assert located[0].location.path == INDEX
    assert located[0].location.line > 1


def test_shard_present_but_not_indexed(tmp_path: Path) -> None:
    root = sharded(tmp_path, {"a": S1, "b": S1})
    report = check(root)
    assert errors(report) == ["PG222", "PG223"]  # numbered -of-00002, but one shard indexed
    assert any(S2 in f.message for f in report.findings if f.rule == "PG223")


def test_tensor_mapped_to_wrong_shard(tmp_path: Path) -> None:
    report = check(sharded(tmp_path, {"a": S2, "b": S1, "c": S2}))
    messages = [f.message for f in report.findings if f.rule == "PG224"]
    assert any("a is in" in m for m in messages)
    assert any("maps a to" in m for m in messages)


def test_tensor_in_two_shards(tmp_path: Path) -> None:
    root = sharded(tmp_path)
    write_st(root / S2, {"c": np.arange(5, dtype=np.float32), "a": np.arange(4, dtype=np.float32)})
    repo(root, S1, S2)
    assert any("both" in f.message for f in check(root).findings if f.rule == "PG224")


def test_duplicate_key_and_malformed_index(tmp_path: Path) -> None:
    root = sharded(tmp_path)
    (root / INDEX).write_text('{"weight_map": {"a": "x", "a": "y"}}')
    assert errors(check(root)) == ["PG221"]
    (root / INDEX).write_text('{"weight_map": {"a": 1}}')
    assert errors(check(root)) == ["PG221"]
    (root / INDEX).write_text("[]")
    assert errors(check(root)) == ["PG221"]


def test_shard_name_escaping_folder(tmp_path: Path) -> None:
    root = sharded(tmp_path, {"a": S1, "b": S1, "c": S2, "x": "../../etc/passwd"})
    assert "PG202" in errors(check(root))


def test_pointer_shards_are_not_inspected_not_passed(tmp_path: Path) -> None:
    root = sharded(tmp_path)
    content = (root / S2).read_bytes()
    repo(root, S1, S2)
    (root / S2).write_bytes(pointer(content))
    report = check(root)
    # The manifest still pins S2 by its sha256, which the pointer's oid matches.
    assert errors(report) == []
    assert "PG225" in rules_of(report, "note")


def test_shard_count_mismatch(tmp_path: Path) -> None:
    root = tmp_path
    write_st(root / S1, {"a": np.arange(4, dtype=np.float32)})
    (root / INDEX).write_text(json.dumps({"weight_map": {"a": S1}}))
    repo(root, S1)
    assert any("-of-00002" in f.message for f in check(root).findings if f.rule == "PG222")


def test_hostile_index_json(tmp_path: Path) -> None:
    root = sharded(tmp_path)
    (root / INDEX).write_text('{"weight_map": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert errors(check(root)) == ["PG221"]
    (root / INDEX).write_bytes(b'{"weight_map": {"a": "\xff"}}')
    assert errors(check(root)) == ["PG221"]
    (root / INDEX).write_text('{"weight_map": {"a": NaN}}')
    assert errors(check(root)) == ["PG221"]
