"""The statistical tests on synthetic matrices with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gate.lineage import calibration, stats

RNG = np.random.default_rng(7)


def gauss(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def test_aligned_separates_a_finetune_from_an_independent_matrix() -> None:
    base = gauss(256, 64)
    tuned = base + 0.3 * gauss(256, 64)
    dep = stats.aligned(tuned, base)
    ind = stats.aligned(gauss(256, 64), base)
    assert dep.effect > 0.9 and dep.log10_p < -100
    assert ind.log10_p > -3
    assert abs(ind.effect - ind.null_effect) < 0.05


def test_aligned_is_invariant_to_unit_scale_and_sign_but_not_to_an_offset() -> None:
    base = gauss(64, 32)
    scale = np.exp(gauss(64, 1)) * np.where(gauss(64, 1) > 0, 1.0, -1.0)
    scaled = stats.aligned((base * scale).astype(np.float32), base)
    assert scaled.effect == pytest.approx(1.0, abs=1e-6)
    assert scaled.raw_effect == pytest.approx(1.0, abs=1e-6)
    shifted = stats.aligned(base + 1.0, base)
    assert shifted.effect == pytest.approx(1.0, abs=1e-6)  # centred: forgiven ...
    assert shifted.raw_effect < 0.9  # ... uncentred: not, so it is no copy


def test_hidden_columns_only_tests_one_orientation() -> None:
    base = gauss(128, 32)
    both = stats.aligned(base, base + 0.1 * gauss(128, 32))
    cols = stats.aligned(base, base + 0.1 * gauss(128, 32), hidden_columns_only=True)
    assert cols.orientation == "columns"
    assert both.orientation in ("rows", "columns")


def test_flat_uses_the_exact_permutation_variance() -> None:
    v = gauss(10_000)
    out = stats.flat(v, v)
    assert out.effect == pytest.approx(1.0)
    assert out.log10_p == pytest.approx(stats.log10_normal_sf(math.sqrt(9_999)) + math.log10(2))
    assert stats.flat(np.ones(8, np.float32), gauss(8)).effect == 0.0  # no variance: no evidence


def test_matched_finds_a_permuted_scaled_copy_and_not_a_stranger() -> None:
    base = gauss(128, 64)
    perm = RNG.permutation(128)
    disguised = base[perm] * -3.0
    hit = stats.matched(disguised, base, seed=1)
    assert hit.effect == pytest.approx(1.0, abs=1e-5)
    assert hit.log10_p == pytest.approx(32 * math.log10(calibration.NULL_HIT_RATE), rel=1e-3)
    miss = stats.matched(gauss(128, 64), base, seed=1)
    assert miss.log10_p == 0.0  # no row reached the hit threshold
    cols = stats.matched(base[:, RNG.permutation(64)], base, seed=1, orientation="columns")
    assert cols.log10_p < -100


def test_assignment_recovers_the_permutation() -> None:
    base = gauss(48, 32)
    perm = RNG.permutation(48)
    found, score = stats.assignment(base[perm], base)
    assert score == pytest.approx(1.0, abs=1e-5)
    assert (perm[found] == np.arange(48)).all()


def test_procrustes_recovers_a_rotation() -> None:
    emb = gauss(300, 16)
    q, _ = np.linalg.qr(gauss(16, 16))
    found = stats.procrustes((emb.T @ (emb @ q)).astype(np.float64))
    assert np.allclose(found, q, atol=1e-4)


def test_regression_and_slerp_recover_merge_coefficients() -> None:
    a, b = gauss(64, 64), gauss(64, 64)
    coef, r2 = stats.regression(0.7 * a + 0.3 * b, [a, b])
    assert coef == pytest.approx([0.7, 0.3], abs=1e-5) and r2 == pytest.approx(1.0)
    va, vb = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    theta = math.acos(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))
    t = 0.25
    merged = (math.sin((1 - t) * theta) * a + math.sin(t * theta) * b) / math.sin(theta)
    coef, _ = stats.regression(merged, [a, b])
    assert stats.slerp_t(coef, a, b) == pytest.approx(t, abs=1e-4)
    assert stats.slerp_t(coef, a, a) is None  # parallel parents: no angle to recover
    assert stats.slerp_t([0.0, 5.0], a, b) is None  # no SLERP explains these


@pytest.mark.parametrize("shape", [(64, 48), (400, 300)])  # full SVD and the sketch
def test_effective_rank_sees_a_lora_update(shape: tuple[int, int]) -> None:
    m, n = shape
    delta = gauss(m, 4) @ gauss(4, n)
    assert stats.effective_rank(delta, seed=3) == 4
    assert stats.effective_rank(np.zeros(shape, np.float32), seed=3) == 0
    assert stats.effective_rank(gauss(m, n), seed=3) > 40


def test_binomial_tail_matches_scipy() -> None:
    import math

    from scipy.stats import binom

    for n in (1, 8, 32):
        for rate in (1e-9, 1e-4, 0.01, 0.2, 0.5, 0.99):
            for hits in range(n + 1):
                want = float(binom.logsf(hits - 1, n, rate))
                got = stats.binomial_log_sf(hits, n, rate)
                assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), (n, rate, hits)
    assert stats.binomial_log_sf(0, 5, 0.3) == 0.0
    assert stats.binomial_log_sf(6, 5, 0.3) == -math.inf


def test_blocked_matching_equals_one_product(monkeypatch: pytest.MonkeyPatch) -> None:
    """Normalising the matched side a block at a time changes nothing but memory."""
    base = gauss(300, 40)
    cand = base[RNG.permutation(300)] * 1.5
    whole = stats.matched_many(cand, base, 7, [None], "rows")
    monkeypatch.setattr(stats, "MATCH_BLOCK", 7)  # 43 blocks, the last one short
    blocked = stats.matched_many(cand, base, 7, [None], "rows")
    assert blocked == whole and whole[0].log10_p < -12


def test_procrustes_is_the_orthogonal_polar_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "POLAR_BLOCK", 5)
    m = gauss(24, 24).astype(np.float64)
    u, _, vt = np.linalg.svd(m)
    assert np.allclose(stats.procrustes(m.copy()), u @ vt, atol=1e-9)
