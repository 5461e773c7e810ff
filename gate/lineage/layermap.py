"""Order-preserving layer maps: which reference layer each candidate layer came from."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def order_preserving(score: np.ndarray, threshold: float) -> list[int | None]:
    """The increasing map of candidate layers (rows) to reference layers (columns) that
    maximises the total score, by dynamic programming; a layer whose best score stays below
    threshold is left unmapped (new, or taken from another model)."""
    import numpy as np

    nc, nr = score.shape
    # best[i][j]: the best total for candidate layers < i using reference layers < j
    best = np.zeros((nc + 1, nr + 1))
    for i in range(1, nc + 1):
        for j in range(0, nr + 1):
            options = [best[i - 1, j]]
            if j:
                options.append(best[i, j - 1])
                if score[i - 1, j - 1] >= threshold:
                    options.append(best[i - 1, j - 1] + score[i - 1, j - 1])
            best[i, j] = max(options)
    out: list[int | None] = [None] * nc
    i, j = nc, nr
    while i > 0 and j > 0:
        if score[i - 1, j - 1] >= threshold and math.isclose(
            best[i, j], best[i - 1, j - 1] + score[i - 1, j - 1]
        ):
            out[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif math.isclose(best[i, j], best[i - 1, j]):
            i -= 1
        else:
            j -= 1
    return out
