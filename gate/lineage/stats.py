"""Statistical tests on pairs of weight matrices, each returning an effect size and a p-value.

All p-values are carried as log10 so that the overwhelming evidence a copy or fine-tune gives
(p far below 1e-300) is not lost to underflow.

- `aligned`: rows (and, separately, columns) of two same-shaped matrices are compared in place.
  The statistic is the mean |cosine| of column-centred rows; its null is the same mean over
  deliberately mismatched rows of the same two matrices (a cyclic shift), so structure the two
  models share without sharing weights (row norms tracking token frequency, a common mean row)
  is in the null too. Two-sample z, one-sided.
- `matched`: robust to hidden-unit permutation, sign flips and per-unit scaling. Sampled rows of
  one matrix are matched against all rows of the other; a row "hits" when its best |cosine|
  reaches HIT_COSINE. Under independence hits are binomial with the null hit rate measured on
  independently trained models (`calibration.json`: models trained on the same data converge
  to partly similar units, so a scrambled-coordinates null would be far too optimistic). The
  same rows matched against the other matrix with scrambled columns give a second, per-pair null
  rate, and the larger of the two is used.
- `procrustes`: the orthogonal map between two residual bases, fitted on the cross product of
  embedding rows of shared tokens (Schönemann 1966), so that residual rotations do not hide a
  copy from `matched`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Literal

from gate.lineage import calibration

if TYPE_CHECKING:
    import numpy as np

Orientation = Literal["rows", "columns", "flat"]
SAMPLE_ROWS = 32
MIN_ROWS = 8
MIN_MATCH_DIM = 32  # shorter vectors match by chance too easily
LN10 = math.log(10.0)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One test on one pair of tensors."""

    test: Literal["aligned", "matched"]
    orientation: Orientation
    rotated: bool  # the reference's residual axis was mapped into the candidate's basis
    effect: float  # mean |cosine| of the compared rows (aligned) or best matches (matched)
    null_effect: float  # the same statistic under the null
    log10_p: float
    # the lowest |cosine| of a compared row before centring: 1.0 only for copies up to per-unit
    # scale, sign and order (centring would forgive a constant added to every weight, and a mean
    # would hide one changed weight)
    raw_effect: float = 0.0


def log10_normal_sf(z: float) -> float:
    """log10 of P(Z > z) for a standard normal, accurate far into the tail."""
    from scipy.special import log_ndtr

    return float(log_ndtr(-z)) / LN10


def _unit_rows(x: np.ndarray) -> np.ndarray:
    import numpy as np

    x = x - x.mean(axis=1, keepdims=True)  # Pearson per row: invariant to scaling a unit
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit: np.ndarray = x / np.where(norms > 0, norms, 1.0)
    return unit


def flat(c: np.ndarray, r: np.ndarray) -> Outcome:
    """Pearson correlation of two same-shaped tensors under the full permutation null, whose
    variance is exactly 1/(n-1): z = r * sqrt(n-1). Used for vectors (norms, biases)."""
    import numpy as np

    a, b = c.ravel() - c.mean(), r.ravel() - r.mean()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    corr = float(a @ b) / denom if denom > 0 else 0.0
    z = abs(corr) * math.sqrt(max(a.size - 1, 1))
    return Outcome(
        "aligned",
        "flat",
        False,
        abs(corr),
        0.0,
        log10_normal_sf(z) + math.log10(2),
        _raw_cos(c.ravel()[None, :], r.ravel()[None, :]),
    )


def aligned(
    c: np.ndarray, r: np.ndarray, rotated: bool = False, hidden_columns_only: bool = False
) -> Outcome:
    """Row-by-row comparison of two same-shaped matrices (see the module docstring).

    The null shifts rows against each other, which is fair only along an axis whose order is
    arbitrary in independent models (hidden units). Rows indexed by tokens or positions are not
    exchangeable (frequent and unused tokens form clusters every model shares), so for those
    matrices only columns (hidden units, compared across tokens) are tested.
    """
    import numpy as np

    if c.ndim != 2 or min(c.shape) < MIN_ROWS:
        return flat(c, r)
    best: Outcome | None = None
    both: tuple[tuple[Orientation, tuple[np.ndarray, np.ndarray]], ...] = (
        ("rows", (c, r)),
        ("columns", (c.T, r.T)),
    )
    orients = both[1:] if hidden_columns_only else both
    for orient, (x, y) in orients:
        cu, ru = _unit_rows(x), _unit_rows(y)
        s = np.abs(np.einsum("ij,ij->i", cu, ru))
        s0 = np.abs(np.einsum("ij,ij->i", cu, np.roll(ru, len(ru) // 2 or 1, axis=0)))
        m = len(s)
        se = math.sqrt((float(s.var()) + float(s0.var())) / m) or 1e-12
        z = (float(s.mean()) - float(s0.mean())) / se
        out = Outcome(
            "aligned",
            orient,
            rotated,
            float(s.mean()),
            float(s0.mean()),
            log10_normal_sf(z) + math.log10(len(orients)),
            _raw_cos(x, y),
        )
        if best is None or out.log10_p < best.log10_p:
            best = out
    assert best is not None
    return best


def matched(
    c: np.ndarray,
    r: np.ndarray,
    seed: int,
    rotation: np.ndarray | None = None,
    orientation: Literal["rows", "columns"] = "rows",
) -> Outcome:
    """Best-match comparison of sampled rows (or columns) of r against all of c's."""
    return matched_many(c, r, seed, [rotation], orientation)[0]


def matched_many(
    c: np.ndarray,
    r: np.ndarray,
    seed: int,
    rotations: list[np.ndarray | None],
    orientation: Literal["rows", "columns"] = "rows",
) -> list[Outcome]:
    """`matched` for several rotations of the reference.

    A rotation maps the reference's vectors into the candidate's basis; it is applied to the
    sampled vectors only. Without one, the side with fewer vectors is sampled (a width-pruned
    model's units are all in its parent, not the other way round). The per-pair null permutes
    the sampled vectors' coordinates, which destroys any shared basis.
    """
    import numpy as np

    x0, y0 = (c, r) if orientation == "rows" else (c.T, r.T)
    out = []
    for rotation in rotations:
        x, y = x0, y0
        if rotation is None and len(y) > len(x):
            x, y = y, x
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(y), size=min(SAMPLE_ROWS, len(y)), replace=False)
        ys = y[pick] if rotation is None else y[pick] @ rotation
        su = _unit_rows(ys)
        su0 = su[:, rng.permutation(su.shape[1])]  # the null: coordinates shuffled
        best, where, best0 = _best_matches(su, su0, x)
        raw = _raw_cos(ys, x[where])
        k = len(best)
        hits = int((best >= calibration.HIT_COSINE).sum())
        rate = max(calibration.NULL_HIT_RATE, float((best0 >= calibration.HIT_COSINE).sum()) / k)
        log10_p = binomial_log_sf(hits, k, rate) / LN10 if hits else 0.0
        out.append(
            Outcome(
                "matched",
                orientation,
                rotation is not None,
                float(best.mean()),
                float(best0.mean()),
                log10_p,
                raw,
            )
        )
    return out


def fourier_rows(a: np.ndarray, share: float = 0.99) -> bool:
    """Whether every non-zero row of a table (trailing dimensions flattened) is a windowed
    sinusoid: share of its energy in three adjacent bins of its real DFT, as a Fourier basis's
    rows are and a learned filter's are not (hashing.Rows is the numpy-free twin)."""
    import numpy as np

    x = np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1)
    power = np.abs(np.fft.rfft(x, axis=1)) ** 2
    total = power.sum(axis=1)
    live = total > 1e-8 * total.max()  # rows of rounding noise (sin at 0 and Nyquist) are zero
    if not live.any() or power.shape[1] < 3:
        return False
    best = (power[:, :-2] + power[:, 1:-1] + power[:, 2:]).max(axis=1)
    return bool((best[live] >= share * total[live]).all())


def binomial_log_sf(hits: int, n: int, rate: float) -> float:
    """ln P(X >= hits) for X ~ Binomial(n, rate), summed in log space (n is a sample of at most
    SAMPLE_ROWS vectors, so at most 33 terms). Written out rather than scipy.stats.binom.logsf:
    importing scipy.stats costs about 0.8 s and 40 MB here, for a sum this small; a test checks
    it against scipy's."""
    if hits <= 0:
        return 0.0
    if hits > n:
        return -math.inf
    if rate <= 0.0:
        return -math.inf
    if rate >= 1.0:
        return 0.0
    lp, lq = math.log(rate), math.log1p(-rate)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        for i in range(hits, n + 1)
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


MATCH_BLOCK = 256  # units of the matched side normalised at a time
POLAR_BLOCK = 256  # rows of m multiplied at a time in procrustes()


def _best_matches(
    su: np.ndarray, su0: np.ndarray, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each sampled unit vector (su, and its shuffled null su0): the best |correlation|
    with any row of x, and where it is. x is normalised MATCH_BLOCK rows at a time, so memory
    stays at the sample and one block, not a normalised copy of the whole tensor."""
    import numpy as np

    kind = np.result_type(su.dtype, x.dtype)  # what one product of the whole would give
    best = np.full(len(su), -1.0, dtype=kind)
    where = np.zeros(len(su), dtype=np.int64)
    best0 = np.full(len(su0), -1.0, dtype=kind)
    for start in range(0, len(x), MATCH_BLOCK):
        xu = _unit_rows(np.ascontiguousarray(x[start : start + MATCH_BLOCK]))
        sims = np.abs(su @ xu.T)
        top = sims.max(axis=1)
        better = top > best
        where[better] = start + sims.argmax(axis=1)[better]
        best = np.maximum(best, top)
        best0 = np.maximum(best0, np.abs(su0 @ xu.T).max(axis=1))
    return best, where, best0


def _raw_cos(a: np.ndarray, b: np.ndarray) -> float:
    """Lowest |cosine| of paired rows, without centring."""
    import numpy as np

    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    ok = (na > 0) & (nb > 0)
    if not ok.any():
        return 0.0
    cos = np.abs(np.einsum("ij,ij->i", a[ok], b[ok])) / (na[ok] * nb[ok])
    return float(cos.min())


def assignment(c: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, float]:
    """Which row of c each row of r became (Hungarian assignment on |cosine|), and the mean
    matched |cosine|. Rows of r beyond c's count are dropped by the solver."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    sim = np.abs(_unit_rows(r) @ _unit_rows(c).T)
    rows, cols = linear_sum_assignment(-sim)
    perm = np.full(len(r), -1)
    perm[rows] = cols
    return perm, float(sim[rows, cols].mean())


def procrustes(m: np.ndarray) -> np.ndarray:
    """Orthogonal q minimising ||er @ q - ec|| over rows of the same tokens, given their cross
    product m = er.T @ ec (float64; overwritten, so the caller can release er and ec first):
    the polar factor m (m.T m)^(-1/2), from a symmetric eigendecomposition, which LAPACK does
    several times faster than the SVD (2.2 s vs 5.7 s at 2048 dims here). Memory is three
    d x d matrices: the MRRR eigensolver (dsyevr: O(d) workspace, where numpy's dsyevd takes
    2 d^2 more; same speed here) overwriting m.T m, then (m v) diag(w)^(-1/2) v.T with m v
    formed in m's place and no inverse square root."""
    import numpy as np
    from scipy.linalg import eigh

    # m.T m is symmetric: its transpose is the Fortran-ordered array LAPACK overwrites in
    # place (a C-ordered one would be copied first)
    w, v = eigh((m.T @ m).T, driver="evr", overwrite_a=True, check_finite=False)
    keep = w > w.max() * 1e-12
    if not keep.all():  # rank-deficient (fewer tokens than dimensions): fall back to the SVD
        u, _, vt = np.linalg.svd(m, full_matrices=False)
        q: np.ndarray = u @ vt
        return q
    for start in range(0, len(m), POLAR_BLOCK):  # m <- m v, in place, a block of rows at a time
        m[start : start + POLAR_BLOCK] = m[start : start + POLAR_BLOCK] @ v
    m /= np.sqrt(w)
    q = m @ v.T
    return q


def regression(c: np.ndarray, parents: list[np.ndarray]) -> tuple[list[float], float]:
    """Least-squares coefficients of c on its parents (no intercept) and the R^2 of the fit."""
    import numpy as np

    a = np.stack([p.ravel().astype(np.float64) for p in parents], axis=1)
    y = c.ravel().astype(np.float64)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    resid = y - a @ coef
    total = float(((y - y.mean()) ** 2).sum()) or 1e-30
    return [float(x) for x in coef], 1.0 - float(resid @ resid) / total


def slerp_t(coef: list[float], p1: np.ndarray, p2: np.ndarray) -> float | None:
    """The SLERP factor t that explains coefficients (a, b) of parents p1, p2, if any."""
    import numpy as np

    v1, v2 = p1.ravel().astype(np.float64), p2.ravel().astype(np.float64)
    cos = float(v1 @ v2 / (np.linalg.norm(v1) * np.linalg.norm(v2) or 1.0))
    theta = math.acos(max(-1.0, min(1.0, cos)))
    if theta < 1e-3 or len(coef) != 2:
        return None
    # mergekit interpolates unit vectors and rescales nothing, so b = sin(t*theta)/sin(theta)
    # on the raw tensors; the ratio of norms enters through the parents' own scale.
    b = coef[1] * math.sin(theta)
    if not -1.0 <= b <= 1.0:
        return None
    return math.asin(b) / theta


def effective_rank(delta: np.ndarray, seed: int, tol: float = 1e-3, sketch: int = 96) -> int:
    """Singular values above tol times the largest: a merged LoRA gives its rank. Large matrices
    are first multiplied by a Gaussian sketch of `sketch` columns, which keeps every rank below
    it (randomised range finding, Halko et al. 2011) at a fraction of a full SVD's cost."""
    import numpy as np

    d = delta.astype(np.float64)
    if min(d.shape) > sketch:
        omega = np.random.default_rng(seed).standard_normal((d.shape[1], sketch))
        d = d @ omega
    s = np.linalg.svd(d, compute_uv=False)
    return int((s > tol * s[0]).sum()) if s.size and s[0] > 0 else 0
