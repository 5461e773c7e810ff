"""Name the format of a file from its first bytes; the extension only breaks ties."""

from __future__ import annotations

import os
import struct

# Extensions of files that hold weights; used to find undeclared weight files.
WEIGHT_SUFFIXES = frozenset(
    {
        ".safetensors",
        ".gguf",
        ".ggml",
        ".bin",
        ".pt",
        ".pth",
        ".ckpt",
        ".pkl",
        ".pickle",
        ".onnx",
        ".h5",
        ".hdf5",
        ".keras",
        ".msgpack",
        ".npz",
        ".npy",
        ".tflite",
        ".joblib",
        ".mlmodel",
        ".pb",
        ".nemo",
        ".llamafile",
    }
)
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".nemo"})
SNIFF_BYTES = 16
# Structures found by formats.loaders that mark a file as weights whatever its name.
WEIGHT_STRUCTURES = {
    "safetensors": "safetensors",
    "gguf": "gguf",
    "hdf5": "hdf5",
    "tflite": "tflite",
    "npy": "numpy",
}
_BY_SUFFIX = {
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".onnx": "onnx",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".keras": "hdf5",
    ".msgpack": "msgpack",
    ".npy": "numpy",
    ".npz": "numpy",
    ".tflite": "tflite",
}


def is_weight_name(path: str) -> bool:
    """Whether a file name says it holds weights (index files and pointers are judged apart)."""
    return os.path.splitext(path)[1].lower() in WEIGHT_SUFFIXES


def sniff(prefix: bytes, path: str, size: int) -> str:
    """The format id (schema `format`) of a file from its first SNIFF_BYTES bytes."""
    suffix = os.path.splitext(path)[1].lower()
    if prefix.startswith(b"GGUF"):
        return "gguf"
    if prefix.startswith(b"\x93NUMPY"):
        return "numpy"
    if prefix.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if prefix[4:8] == b"TFL3":
        return "tflite"
    if prefix.startswith(b"PK\x03\x04") or prefix.startswith(b"PK\x05\x06"):
        # A zip in a weight slot is a torch checkpoint (pickle inside) unless it is an .npz.
        return "numpy" if suffix == ".npz" else "pickle"
    if prefix[:1] == b"\x80" and prefix[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if len(prefix) >= 9 and prefix[8:9] == b"{":
        (n,) = struct.unpack("<Q", prefix[:8])
        if n <= size - 8:
            return "safetensors"
    if suffix in PICKLE_SUFFIXES:
        # Unknown bytes under a pickle-family name: treat as pickle (protocol 0/1 has no magic).
        return "pickle"
    return _BY_SUFFIX.get(suffix, "other")
