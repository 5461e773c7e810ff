from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gate import checks, init_lock, paths, yamlio
from tests.helpers import check, errors, pointer, write_st

HAND_WRITTEN = """\
# Our model. Keep this comment!
version: 1

model:
    name: "demo"        # quoted on purpose
    license: apache-2.0
    origin: scratch

artifacts:
- path: model.safetensors   # the main weights
  size: 1                   # stale
- path: extra.safetensors
policy:
    allowed_formats: [safetensors]   # flow style stays
"""


def target(root: Path) -> checks.Target:
    return checks.Target.resolve(str(root), None)


def test_lock_keeps_comments_order_and_layout(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors", seed=1)
    write_st(tmp_path / "extra.safetensors", seed=2)
    (tmp_path / "provenance.yaml").write_text(HAND_WRITTEN)
    outcome = init_lock.lock(target(tmp_path))
    assert outcome.report.findings == ()
    text = (tmp_path / "provenance.yaml").read_text()
    before = HAND_WRITTEN.splitlines()
    after = text.splitlines()
    kept = [line for line in before if "size: 1" not in line]
    assert [line for line in after if line in kept] == kept  # every other line, in order
    added = [line for line in after if line not in before]
    assert len(added) == 6  # size (changed), sha256, tensors_digest; 3 new for extra
    assert all(
        line.startswith("  ") and line.split(":")[0].strip() in {"size", "sha256", "tensors_digest"}
        for line in added
    )
    assert (
        "size:" in text.split("- path: model.safetensors")[1].splitlines()[1]
    )  # order: path, size
    assert errors(check(tmp_path)) == []
    assert set(outcome.written) == {"provenance.yaml", "provenance.lock.json"}


def test_lock_is_idempotent(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    write_st(tmp_path / "extra.safetensors")
    (tmp_path / "provenance.yaml").write_text(HAND_WRITTEN)
    init_lock.lock(target(tmp_path))
    stamp = (tmp_path / "provenance.yaml").stat().st_mtime_ns
    again = init_lock.lock(target(tmp_path))
    assert again.changes == ()
    assert again.written == ()
    assert (tmp_path / "provenance.yaml").stat().st_mtime_ns == stamp


def test_lock_file_lists_every_tensor(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    write_st(tmp_path / "extra.safetensors")
    (tmp_path / "provenance.yaml").write_text(HAND_WRITTEN)
    init_lock.lock(target(tmp_path))
    lock = json.loads((tmp_path / "provenance.lock.json").read_text())
    entry = lock["artifacts"]["model.safetensors"]
    assert set(entry["tensors"]) == {
        "embed.weight",
        "layers.0.w",
        "layers.0.norm",
        "layers.0.bias",
        "layers.1.w",
        "layers.1.norm",
        "layers.1.bias",
    }
    assert entry["tensors"]["layers.0.norm"]["constant"] is True
    assert "constant" not in entry["tensors"]["layers.0.w"]


def test_lock_reports_missing_files_and_still_locks_the_rest(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    (tmp_path / "provenance.yaml").write_text(HAND_WRITTEN)
    outcome = init_lock.lock(target(tmp_path))
    assert [f.rule for f in outcome.report.findings] == ["PG201"]
    assert "sha256:" in (tmp_path / "provenance.yaml").read_text()


def test_lock_refuses_paths_outside(tmp_path: Path) -> None:
    (tmp_path / "provenance.yaml").write_text(
        HAND_WRITTEN.replace("extra.safetensors", "../x.safetensors")
    )
    write_st(tmp_path / "model.safetensors")
    outcome = init_lock.lock(target(tmp_path))
    assert [f.rule for f in outcome.report.findings] == ["PG202"]


def test_lock_invalid_manifest_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "provenance.yaml").write_text("version: 1\nmodel: {name: x}\n")
    outcome = init_lock.lock(target(tmp_path))
    assert outcome.report.manifest_invalid
    assert outcome.written == ()
    assert not (tmp_path / "provenance.lock.json").exists()


def test_lock_from_lfs_pointer_keeps_tensor_detail(tmp_path: Path) -> None:
    content = write_st(tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "provenance.yaml").write_text(
        HAND_WRITTEN.replace("- path: extra.safetensors\n", "")
    )
    init_lock.lock(target(tmp_path))
    detail = json.loads((tmp_path / "provenance.lock.json").read_text())["artifacts"][
        "model.safetensors"
    ]
    (tmp_path / "model.safetensors").write_bytes(pointer(content))
    outcome = init_lock.lock(target(tmp_path))
    assert outcome.changes == ()
    after = json.loads((tmp_path / "provenance.lock.json").read_text())["artifacts"][
        "model.safetensors"
    ]
    assert after["tensors"] == detail["tensors"]
    assert after["lfs_pointer"] is True


def test_init_scaffolds_from_card_and_weights(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    write_st(tmp_path / "sub" / "adapter.safetensors", seed=4)
    (tmp_path / "README.md").write_text(
        "---\nlicense: llama2\nbase_model:\n- meta-llama/Llama-2-7b-hf\nbase_model_relation: adapter\n---\n# card\n"
    )
    outcome = init_lock.init(target(tmp_path))
    assert outcome.report.findings == ()
    text = (tmp_path / "provenance.yaml").read_text()
    assert "license: llama2  # from README.md front matter" in text
    assert "origin: derived" in text
    assert "- id: meta-llama/Llama-2-7b-hf" in text
    assert "relation: adapter" in text
    assert "- path: model.safetensors" in text
    assert "- path: sub/adapter.safetensors" in text
    # the Hub cannot be reached here, so the revision is left for a human to pin
    assert "    # revision: the base's full commit sha on the Hub (required)" in text
    assert errors(check(tmp_path)) == ["PG801"]


def test_init_without_card(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    init_lock.init(target(tmp_path))
    text = (tmp_path / "provenance.yaml").read_text()
    assert "license: unknown" in text
    assert "origin: scratch" in text
    assert f"name: {tmp_path.name}" in text or f'name: "{tmp_path.name}"' in text


def test_init_extends_existing_manifest(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    write_st(tmp_path / "extra.safetensors")
    (tmp_path / "provenance.yaml").write_text(
        HAND_WRITTEN.replace("- path: extra.safetensors\n", "")
    )
    write_st(tmp_path / "new.safetensors", seed=9)
    outcome = init_lock.init(target(tmp_path))
    assert "new.safetensors: declared" in outcome.changes
    assert "extra.safetensors: declared" in outcome.changes
    text = (tmp_path / "provenance.yaml").read_text()
    assert text.startswith("# Our model. Keep this comment!\n")
    assert "# the main weights" in text
    assert "# flow style stays" in text
    assert errors(check(tmp_path)) == []


def test_init_card_with_hostile_front_matter(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    (tmp_path / "README.md").write_text("---\nlicense: &a [x]\nbase_model: *a\n---\n")
    init_lock.init(target(tmp_path))
    assert "license: unknown" in (tmp_path / "provenance.yaml").read_text()


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        paths.atomic_write(str(path), "new \ud800\n")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["f.yaml"]


def test_atomic_write_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("old\n")
    path.chmod(0o600)
    paths.atomic_write(str(path), "new\n")
    assert path.read_text() == "new\n"
    assert (path.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a:\n  - x\n", (2, 4, 2)),
        ("a:\n- x\n", (2, 2, 0)),
        ("a:\n    b: 1\nc:\n    - x\n", (4, 6, 4)),
        ("a: 1\n", (2, 4, 2)),
    ],
)
def test_detect_indent(text: str, expected: tuple[int, int, int]) -> None:
    assert yamlio.detect_indent(text) == expected


def test_init_with_card_base_that_is_not_a_hub_id(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    (tmp_path / "README.md").write_text("---\nlicense: mit\nbase_model: ./my local base\n---\n")
    outcome = init_lock.init(target(tmp_path))
    text = (tmp_path / "provenance.yaml").read_text()
    assert '# - "./my local base": in the card but not a Hub id; declare it' in text
    assert outcome.written == ("provenance.yaml",)
    assert outcome.report.manifest_invalid  # origin derived without a base: the user decides
    assert [f.message for f in outcome.report.findings] == [
        "model.origin: origin `derived` needs at least one entry in base_models"
    ]


def test_init_skips_base_and_reference_folders(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    write_st(tmp_path / "refs" / "public" / "model.safetensors", seed=3)
    (tmp_path / "provenance.yaml").write_text(
        "version: 1\nmodel: {name: x, license: mit, origin: scratch}\n"
        "policy:\n  lineage:\n    references: [./refs/public/]\n"
    )
    outcome = init_lock.init(target(tmp_path))
    assert outcome.changes[0] == "model.safetensors: declared"
    assert "- path: refs/" not in (tmp_path / "provenance.yaml").read_text()
    assert errors(check(tmp_path)) == []


def test_non_weight_artifacts_are_hashed_without_format_policy(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "provenance.yaml").write_text(
        "version: 1\nmodel: {name: x, license: mit, origin: scratch}\n"
        "artifacts:\n  - path: model.safetensors\n  - path: config.json\n"
    )
    init_lock.lock(target(tmp_path))
    report = check(tmp_path)
    assert errors(report) == []
    assert [a.format for a in report.artifacts] == ["safetensors", "other"]


def test_lock_drops_a_tensor_digest_the_content_no_longer_has(tmp_path: Path) -> None:
    write_st(tmp_path / "model.weights")  # an unknown extension: the content decides
    (tmp_path / "provenance.yaml").write_text(
        "version: 1\nmodel: {name: x, license: mit, origin: scratch}\n"
        "artifacts:\n  - path: model.weights\n"
    )
    init_lock.lock(target(tmp_path))
    assert "tensors_digest" in (tmp_path / "provenance.yaml").read_text()
    (tmp_path / "model.weights").write_bytes(b"no tensor table here")
    outcome = init_lock.lock(target(tmp_path))
    assert "model.weights: tensors_digest removed (no tensors in other)" in outcome.changes
    assert "tensors_digest" not in (tmp_path / "provenance.yaml").read_text()


def test_lock_keeps_the_tensor_digest_of_a_corrupt_checkpoint(tmp_path: Path) -> None:
    write_st(tmp_path / "model.safetensors")
    (tmp_path / "provenance.yaml").write_text(
        "version: 1\nmodel: {name: x, license: mit, origin: scratch}\n"
        "artifacts:\n  - path: model.safetensors\n"
    )
    init_lock.lock(target(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    assert [f.rule for f in init_lock.lock(target(tmp_path)).report.findings] == ["PG304"]
    assert "tensors_digest" in (tmp_path / "provenance.yaml").read_text()
    assert "PG304" in [f.rule for f in check(tmp_path).findings]


def test_init_tells_other_models_from_variants(tmp_path: Path) -> None:
    """A sub-folder with its own config.json is another model only beside weights of the
    repository's own; a repository of variants in sub-folders declares them all."""
    for folder in ("small", "large"):
        write_st(tmp_path / "variants" / folder / "model.safetensors")
        (tmp_path / "variants" / folder / "config.json").write_text("{}")
    outcome = init_lock.init(target(tmp_path / "variants"))
    assert not [w for w in outcome.warnings if "holds another model" in w]
    text = (tmp_path / "variants" / "provenance.yaml").read_text()
    assert "- path: large/model.safetensors" in text and "references" not in text

    root = tmp_path / "vendored"
    write_st(root / "model.safetensors")
    write_st(root / "third_party" / "base" / "model.safetensors", seed=2)
    (root / "third_party" / "base" / "config.json").write_text("{}")
    write_st(root / "shards" / "extra.safetensors", seed=3)  # no config.json: this model's own
    init_lock.init(target(root))
    text = (root / "provenance.yaml").read_text()
    assert "references: [third_party/base]" in text
    assert "- path: shards/extra.safetensors" in text and "- path: third_party" not in text
