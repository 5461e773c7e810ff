"""`identify` on the trained zoo: packs of every base, built from local folders and from `hf://`
copies on a Hub stand-in (the same content), and every model of the first bases identified
(the whole zoo, with its negatives and held-out bases: bench/identify.py, asserted in
tests/test_bench.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gate import hubclient, settings
from gate.lineage import identify, index, pack
from gate.scanner import Scanner
from tests import hubserver
from tests.lineage.test_zoo import names
from tests.zoo import build

pytestmark = pytest.mark.slow  # the trained zoo, and a Hub stand-in

BASES = ("llama-s0", "llama-s1", "llama-s2", "llama-s3", "gpt2-s0", "gpt2-s1")
# need the whole base (a sample compares rows in place; a rotation moves them all): never a
# wrong base, at most "no known base"; an unmerged adapter holds no base weights
NO_BASE_EXPECTED = {"rotated", "all-attacks", "lora-adapter"}


@pytest.fixture(scope="module")
def zoo_index(zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(index of packs from local folders, index of packs from the Hub stand-in)."""
    work = tmp_path_factory.mktemp("packs")
    server = hubserver.RangeHub()
    try:
        shas = {b: server.add(f"zoo/{b}", str(zoo / b)) for b in BASES}
        os.environ["HF_ENDPOINT"] = server.endpoint
        hub = hubclient.HubClient(settings.Settings.from_environment(cache_dir=str(work / "c")))
        local, remote = [], []
        for b in BASES:
            local.append(str(work / f"{b}{pack.SUFFIX}"))
            pack.fingerprint(str(zoo / b), local[-1], scanner=Scanner(), name=b)
            remote.append(str(work / f"hf-{b}{pack.SUFFIX}"))
            pack.fingerprint(f"hf://zoo/{b}@{shas[b]}", remote[-1], scanner=Scanner(), hub=hub,
                             name=b)  # fmt: skip
            base_bytes = sum(os.path.getsize(zoo / b / f) for f in os.listdir(zoo / b))
            assert server.sent[f"zoo/{b}"] < base_bytes  # headers and rows, not the files
    finally:
        os.environ.pop("HF_ENDPOINT", None)
        server.close()
    index.add(str(work / "local"), local)
    index.add(str(work / "hub"), remote)
    return str(work / "local"), str(work / "hub")


def test_hub_packs_have_the_local_packs_content(zoo_index: tuple[str, str]) -> None:
    local, hub = (index.load(p) for p in zoo_index)
    by_name = {e.name: e for e in local.entries}
    for e in hub.entries:
        assert e.content_digest == by_name[e.name].content_digest, e.name
        assert e.source.startswith("hf://zoo/") and by_name[e.name].source.startswith("/")
    assert index.verify(local) == [] and index.verify(hub) == []


@pytest.mark.parametrize("name", names())
def test_identify_ranks_the_true_base_first(
    zoo: Path, zoo_index: tuple[str, str], name: str
) -> None:
    t = build.truth(zoo)[name]
    parents = set(t.get("parents") or [t["base"]])
    got = identify.identify(str(zoo / name), [zoo_index[1]], Scanner())
    assert got.packs == len(BASES)
    wrong = [m.name for m in got.bases if m.name not in parents]
    assert not wrong, [m.verdict.summary() for m in got.bases]
    if name.split(".", 1)[-1] in NO_BASE_EXPECTED:
        return
    assert got.bases, [m.verdict.summary() for m in got.others]
    top = got.bases[0]
    assert top.name in parents and top.verdict.p_value is not None
    assert top.verdict.p_value <= 1e-3
