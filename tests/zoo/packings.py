"""Writers of the 4-bit layouts models are published in, for the zoo and the unpacker tests.

GPTQ and AWQ follow their published layouts (AutoGPTQ's QuantLinear.pack, AutoAWQ's
WQLinear_GEMM.from_linear), independently of gate/lineage/models.py's readers; bitsandbytes and
MLX use the libraries' own quantizers (their CPU builds). Each returns the tensors a checkpoint
holds for one torch-layout [out, in] weight and the values they dequantize to.
"""

from __future__ import annotations

from typing import Any

import numpy as np

AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ: slot i of a word holds channel 8w + this


def gptq(
    w: np.ndarray, bits: int, group: int, act_order: bool, v1: bool, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    out_f, in_f = w.shape
    per, top = 32 // bits, (1 << bits) - 1
    order = rng.permutation(in_f) if act_order else np.arange(in_f)
    g_idx = np.empty(in_f, np.int32)
    g_idx[order] = np.arange(in_f) // group  # act-order: groups follow a permuted row order
    groups = in_f // group
    wt = w.T.astype(np.float64)  # [in, out]
    scales = np.empty((groups, out_f), np.float16)
    zeros = np.empty((groups, out_f), np.int64)
    for g in range(groups):
        rows = wt[g_idx == g]
        lo, hi = np.minimum(rows.min(0), 0), np.maximum(rows.max(0), 0)
        scale = np.maximum((hi - lo) / top, 1e-8).astype(np.float16)
        scales[g] = scale
        zeros[g] = np.clip(np.round(-lo / scale.astype(np.float64)), 1 if v1 else 0, top)
    s, z = scales.astype(np.float64)[g_idx], zeros[g_idx]
    q = np.clip(np.round(wt / s + z), 0, top).astype(np.uint64)
    qweight = np.zeros((in_f // per, out_f), np.uint64)
    for j in range(per):
        qweight |= q[j::per] << np.uint64(j * bits)
    stored = (zeros - 1) if v1 else zeros
    qzeros = np.zeros((groups, out_f // per), np.uint64)
    for j in range(per):
        qzeros |= (stored[:, j::per].astype(np.uint64) & np.uint64(top)) << np.uint64(j * bits)
    tensors = {
        "qweight": qweight.astype(np.uint32).view(np.int32),
        "qzeros": qzeros.astype(np.uint32).view(np.int32),
        "scales": scales,
        "g_idx": g_idx,
    }
    return tensors, ((q.astype(np.float64) - z) * s).T.astype(np.float32)


def awq(w: np.ndarray, group: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    out_f, in_f = w.shape
    wt = w.T.astype(np.float64)
    groups = in_f // group
    g = np.arange(in_f) // group
    lo = np.minimum(wt.reshape(groups, group, out_f).min(1), 0)
    hi = np.maximum(wt.reshape(groups, group, out_f).max(1), 0)
    scales = np.ascontiguousarray(np.maximum((hi - lo) / 15, 1e-8), dtype=np.float16)
    zeros = np.clip(np.round(-lo / scales.astype(np.float64)), 0, 15).astype(np.int64)
    s, z = scales.astype(np.float64)[g], zeros[g]
    q = np.clip(np.round(wt / s) + z, 0, 15).astype(np.uint64)
    qweight = np.zeros((in_f, out_f // 8), np.uint64)
    qzeros = np.zeros((groups, out_f // 8), np.uint64)
    for col in range(out_f // 8):
        for i, k in enumerate(AWQ_PACK_ORDER):
            qweight[:, col] |= q[:, col * 8 + k] << np.uint64(4 * i)
            qzeros[:, col] |= zeros[:, col * 8 + k].astype(np.uint64) << np.uint64(4 * i)
    tensors = {
        "qweight": qweight.astype(np.uint32).view(np.int32),
        "qzeros": qzeros.astype(np.uint32).view(np.int32),
        "scales": scales,
    }
    return tensors, ((q.astype(np.float64) - z) * s).T.astype(np.float32)


def bnb4(w: np.ndarray, kind: str, nested: bool) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """bitsandbytes' quantize_4bit, serialised as transformers does (`weight` plus
    `weight.<state>` entries)."""
    import torch
    from bitsandbytes import functional

    q, state = functional.quantize_4bit(
        torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)),
        blocksize=64,
        quant_type=kind,
        compress_statistics=nested,
    )
    tensors = {"": q.numpy()} | {f".{k}": v.numpy() for k, v in state.as_dict(packed=True).items()}
    return tensors, functional.dequantize_4bit(q, state).numpy()


def mlx(w: np.ndarray, bits: int, group: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """mlx.core.quantize, stored as mlx-lm does (uint32 weight, float16 scales and biases)."""
    import mlx.core as mx

    q, scales, biases = mx.quantize(
        mx.array(np.asarray(w, np.float32)), group_size=group, bits=bits
    )
    scales, biases = scales.astype(mx.float16), biases.astype(mx.float16)
    wide = scales.astype(mx.float32), biases.astype(mx.float32)
    expected = np.array(mx.dequantize(q, *wide, group_size=group, bits=bits))
    tensors = {"weight": np.array(q), "scales": np.array(scales), "biases": np.array(biases)}
    return tensors, expected


def checkpoint(
    kind: str, state: dict[str, np.ndarray], seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A whole model's state in one of the layouts, and its config.json additions: the linear
    layers packed (GPTQ and AWQ leave embeddings and the head in float16 as their tools do;
    bitsandbytes leaves the head; MLX packs every matrix)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, w in state.items():
        linear = w.ndim == 2 and ".layers." in name
        matrix = w.ndim == 2
        if kind in ("gptq", "awq") and linear:
            parts = gptq(w, 4, 32, True, True, rng)[0] if kind == "gptq" else awq(w, 32)[0]
            out.update({name.removesuffix("weight") + k: v for k, v in parts.items()})
        elif kind == "nf4" and linear:
            out.update({name + k: v for k, v in bnb4(w, "nf4", True)[0].items()})
        elif kind == "mlx" and matrix:
            out.update({name.removesuffix("weight") + k: v for k, v in mlx(w, 4, 32)[0].items()})
        else:
            out[name] = w.astype(np.float16) if kind in ("gptq", "awq") else w
    config: dict[str, Any] = {
        "gptq": {
            "quantization_config": {
                "quant_method": "gptq",
                "bits": 4,
                "group_size": 32,
                "desc_act": True,
                "checkpoint_format": "gptq",
            }
        },
        "awq": {
            "quantization_config": {
                "quant_method": "awq",
                "bits": 4,
                "group_size": 32,
                "version": "gemm",
                "zero_point": True,
            }
        },
        "nf4": {
            "quantization_config": {
                "quant_method": "bitsandbytes",
                "load_in_4bit": True,
                "bnb_4bit_quant_type": "nf4",
                "bnb_4bit_use_double_quant": True,
            }
        },
        "mlx": {"quantization": {"group_size": 32, "bits": 4}},
    }[kind]
    return out, config
