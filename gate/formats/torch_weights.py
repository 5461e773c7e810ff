"""Tensors from an allowed torch checkpoint, for lineage; needs the `torch` extra.

Safety: called only for files whose static scan passed (exposure.PickleScan.ok), and even then
through `torch.load(weights_only=True)`, torch's restricted unpickler that refuses every global
outside tensor and container types. Zip checkpoints are memory-mapped, so memory stays bounded by
the tensor being digested; legacy (non-zip) files cannot be mapped and are loaded whole.
"""

from __future__ import annotations

from typing import Any

import blake3

from gate.formats.exposure import PickleScan
from gate.formats.pickles import ALLOWED
from gate.hashing import TensorDigest, formula_table

_DTYPES = {
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float64": "F64",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}


# The part of the scan's allowlist that torch.load(weights_only=True) accepts too: a checkpoint
# importing only these that torch refuses is a disagreement between the two readers.
TORCH_READS = frozenset(g for g in ALLOWED if g.startswith("torch.")) | {"collections.OrderedDict"}


def disagrees(scan: PickleScan) -> bool:
    """Whether torch refusing this scanned pickle means the two readers disagree: it is a torch
    object graph and imports nothing torch's restricted loader lacks."""
    torch_graph = any(g.startswith("torch.") for g in scan.globals)
    return torch_graph and set(scan.globals) <= TORCH_READS


class TorchUnavailable(Exception):
    """torch is not installed (the `torch` extra)."""


def available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except ValueError:  # sys.modules["torch"] is None: torch deliberately blocked
        return False


def tensor_digests(path: str, scan: PickleScan) -> tuple[TensorDigest, ...]:
    """Per-tensor digests (as for safetensors) of the tensors in a scanned torch checkpoint."""
    if not scan.ok:
        raise ValueError("refusing to load a pickle whose static scan did not pass")
    if not available():
        raise TorchUnavailable("install the torch extra to read pickled checkpoints")
    import zipfile

    import torch

    mmap = zipfile.is_zipfile(path)
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    out = []
    for name, tensor in _flatten(state, ""):
        flat = tensor.detach().contiguous().reshape(-1)
        dtype = _DTYPES.get(str(flat.dtype).removeprefix("torch."), str(flat.dtype))
        data = flat.view(torch.uint8).numpy() if flat.numel() else b""
        digest = blake3.blake3(memoryview(data)).hexdigest()
        constant = bool(flat.numel() <= 1 or torch.equal(flat, flat[:1].expand_as(flat)))
        formula = not constant and formula_table(dtype, tuple(tensor.shape), data, name)
        out.append(TensorDigest(name, dtype, tuple(tensor.shape), digest, constant, formula))
    return tuple(out)


def _flatten(obj: Any, prefix: str) -> list[tuple[str, Any]]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [(prefix, obj)]
    if isinstance(obj, dict):
        items: list[tuple[str, Any]] = []
        for key, value in obj.items():
            items += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return items
    if isinstance(obj, list | tuple):
        items = []
        for i, value in enumerate(obj):
            items += _flatten(value, f"{prefix}.{i}" if prefix else str(i))
        return items
    return []
