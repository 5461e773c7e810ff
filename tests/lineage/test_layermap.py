"""Order-preserving layer maps."""

from __future__ import annotations

import numpy as np

from gate.lineage.layermap import order_preserving


def test_every_second_layer_kept() -> None:
    score = np.zeros((2, 4))
    score[0, 0] = score[1, 2] = 40.0
    score[1, 1] = 3.0  # below the threshold: chance
    assert order_preserving(score, threshold=6.0) == [0, 2]


def test_order_is_preserved_and_new_layers_stay_unmapped() -> None:
    score = np.array([[50.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 30.0]])
    assert order_preserving(score, threshold=6.0) == [0, None, 2]
    crossed = np.array([[0.0, 40.0], [40.0, 0.0]])  # a swap cannot be order-preserving
    assert order_preserving(crossed, threshold=6.0) in ([None, 0], [1, None])
