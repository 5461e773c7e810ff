"""Decoding tensors for the weight tiers: a whole matrix is decoded a block of rows at a time
with the same result as one conversion, and non-finite values are zeroed and named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gate.lineage import models, tensors
from tests.helpers import write_st


def test_blocked_decoding_equals_one_conversion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = np.random.default_rng(0).standard_normal((37, 16)).astype(np.float16)
    data[20, 3] = np.nan
    data[33, 0] = np.inf
    write_st(tmp_path / "model.safetensors", {"w": data, "v": data[0].copy()})
    monkeypatch.setattr(tensors, "DECODE_BYTES", 100)  # 3 rows (32 bytes each) a block
    model = models.open_model(str(tmp_path))
    try:
        t = model.tensors[next(n for n in model.tensors if model.tensors[n].shape == (37, 16))]
        got = model.array(t)
        want = np.nan_to_num(data.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        assert got.dtype == np.float32 and np.array_equal(got, want)
        assert any("non-finite values treated as 0" in p for p in model.problems)
        assert np.array_equal(model.array(t, np.array([1, 2])), want[[1, 2]])
    finally:
        model.close()


def test_bf16_widens_exactly_as_ml_dtypes_does() -> None:
    import ml_dtypes

    bits = np.arange(1 << 16, dtype=np.uint16)  # every bf16 value: zeros, subnormals, inf, NaN
    got = tensors.to_float32(bits, "BF16")
    want = bits.view(ml_dtypes.bfloat16).astype(np.float32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert np.array_equal(
        tensors.to_float32(bits.reshape(256, 256)[::2], "BF16"), got.reshape(256, 256)[::2]
    )
