"""The format registry is the one place a format is described: everything else agrees with it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from gate import rules, watch
from gate.formats import registry, sniff

ROOT = Path(__file__).resolve().parents[2]


def test_every_format_is_a_schema_format_and_back() -> None:
    schema = json.loads((ROOT / "schemas" / "manifest.v1.schema.json").read_text())
    assert len(registry.BY_NAME) == len(registry.SPECS)
    assert set(registry.BY_NAME) == set(schema["$defs"]["format"]["enum"])


def test_suffixes_belong_to_one_format_and_header_rules_exist() -> None:
    suffixes = [x for s in registry.SPECS for x in s.suffixes]
    assert len(suffixes) == len(set(suffixes))
    assert all(x.startswith(".") and x == x.lower() for x in suffixes)
    for spec in registry.SPECS:
        assert (spec.header is None) == (spec.header_rule is None), spec.name
        if spec.header_rule:
            assert spec.header_rule in rules.RULES


@pytest.mark.parametrize("spec", registry.SPECS, ids=lambda s: s.name)
def test_a_name_alone_sniffs_as_its_format(spec: registry.FormatSpec) -> None:
    for suffix in spec.suffixes:
        assert sniff.sniff(b"\x00" * 16, f"weights{suffix}", 1 << 20) == spec.name


def test_the_full_hook_watches_every_registered_suffix() -> None:
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert hooks["provenance-gate-full"]["files"] == watch.hook_files()
    for suffix in registry.WEIGHT_SUFFIXES:
        assert re.search(watch.hook_files(), f"sub/model{suffix}"), suffix


def test_not_inspected_formats_are_the_ones_without_a_reader() -> None:
    not_inspected = {s.name for s in registry.SPECS if not s.inspected}
    assert not_inspected == {"hdf5", "keras", "tflite", "coreml", "savedmodel", "numpy", "msgpack"}


def test_every_tensor_format_has_a_lineage_reader() -> None:
    from gate.lineage import models

    assert set(models.READERS) == set(registry.LINEAGE_FORMATS)
