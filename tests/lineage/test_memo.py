"""The lineage verdict cache: keyed by everything the comparison reads, round-trips verdicts
exactly, and refuses what it cannot decode."""

from __future__ import annotations

from pathlib import Path

from gate.cache import StatCache
from gate.lineage import memo
from gate.lineage.result import LayerEvidence, TensorEvidence, Verdict
from gate.scanner import Scanner
from tests.helpers import write_st

VERDICT = Verdict(
    reference="base",
    relation="merge",
    dependent=True,
    p_value=0.0,
    log10_p=-1e9,
    p_method="fisher",
    tests=3,
    effects={"aligned": 0.9},
    details={"merge": {"parents": ["a", "base"], "mean_coefficients": [0.3, 0.7]}},
    structure={"config": "same"},
    layers=(LayerEvidence("0", 2, 1, 0.9, -12.0, 0, "matched"),),
    tensors=(TensorEvidence("w", "w", 0, "aligned", "same", False, 0.9, 0.01, -12.0, 0.9),),
    notes=("a note",),
)


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    cand, base = tmp_path / "m", tmp_path / "m" / "base"
    write_st(cand / "model.safetensors", seed=1)
    write_st(base / "model.safetensors", seed=2)
    return cand, base


def _key(cand: Path, base: Path, scanner: Scanner, alpha: float = 1e-3) -> bytes | None:
    return memo.key(
        [str(cand / "model.safetensors")], str(cand), [("base", str(base))], scanner, alpha
    )


def test_verdicts_round_trip(tmp_path: Path) -> None:
    cache = StatCache(str(tmp_path / "cache"))
    cand, base = _folders(tmp_path)
    key = _key(cand, base, Scanner(cache))
    memo.store(cache, key, [VERDICT, None])
    cache.flush()
    assert memo.load(StatCache(str(tmp_path / "cache")), key) == [VERDICT, None]


def test_the_key_follows_every_input(tmp_path: Path) -> None:
    scanner = Scanner(StatCache(str(tmp_path / "cache")))
    cand, base = _folders(tmp_path)
    first = _key(cand, base, scanner)
    assert first is not None and first == _key(cand, base, scanner)
    assert _key(cand, base, scanner, alpha=1e-4) != first
    (base / "config.json").write_text('{"model_type": "llama"}')
    with_config = _key(cand, base, scanner)
    assert with_config != first
    write_st(base / "model.safetensors", seed=3)
    assert _key(cand, base, scanner) not in (first, with_config)
    write_st(cand / "model.safetensors", seed=4)
    keys = {_key(cand, base, scanner), first, with_config}
    assert len(keys) == 3 and None not in keys


def test_a_row_that_does_not_decode_is_a_miss(tmp_path: Path) -> None:
    cache = StatCache(str(tmp_path / "cache"))
    cand, base = _folders(tmp_path)
    key = _key(cand, base, Scanner(cache))
    assert key is not None
    for payload in ("not json", '[{"relation": "cousin"}]', '[{"reference": "x"}]', "{}"):
        cache.memo_put(memo.KIND, key, payload)
        cache.flush()
        assert memo.load(cache, key) is None, payload
    assert memo.load(None, key) is None
