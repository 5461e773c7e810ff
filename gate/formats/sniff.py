"""Name the format of a file from its first bytes; the extension only breaks ties."""

from __future__ import annotations

import os
import re

from gate.formats import registry
from gate.formats.registry import SNIFF_BYTES, WEIGHT_SUFFIXES

PICKLE_SUFFIXES = registry.EXECUTABLE_SUFFIXES
# Structures found by formats.loaders that mark a file as weights whatever its name.
WEIGHT_STRUCTURES = {s.name: s.name for s in registry.SPECS if s.announces} | {"npy": "numpy"}
__all__ = ["PICKLE_SUFFIXES", "SNIFF_BYTES", "WEIGHT_STRUCTURES", "WEIGHT_SUFFIXES"]


# TensorFlow SavedModel files, by name (their checkpoint shards have no suffix of their own)
SAVEDMODEL = re.compile(r"(^|/)(saved_model\.pb|variables\.index|variables\.data-\d{5}-of-\d{5})$")


def is_weight_name(path: str) -> bool:
    """Whether a file name says it holds weights (index files and pointers are judged apart)."""
    return os.path.splitext(path)[1].lower() in WEIGHT_SUFFIXES or bool(SAVEDMODEL.search(path))


def named(path: str) -> str:
    """The format a path's name alone says: SavedModel files by name, anything inside a Core
    ML `.mlpackage` folder (its `weight.bin` is a MIL blob file, no loader unpickles it), else
    the suffix's format, else `other`. Content (the magic) overrides it: see sniff."""
    if SAVEDMODEL.search(path):
        return "savedmodel"
    folders = path.replace("\\", "/").split("/")[:-1]
    if any(part.lower().endswith(".mlpackage") for part in folders):
        return "coreml"
    spec = registry.BY_SUFFIX.get(os.path.splitext(path)[1].lower())
    return spec.name if spec is not None else "other"


def sniff(prefix: bytes, path: str, size: int) -> str:
    """The format id (schema `format`) of a file from its first SNIFF_BYTES bytes: the first
    registry entry whose magic matches, else the one its name says (`named`)."""
    suffix = os.path.splitext(path)[1].lower()
    for spec in registry.SPECS:
        if spec.magic is not None and spec.magic(prefix, suffix, size):
            return spec.name
    # Unknown bytes under a pickle-family name are a pickle (protocol 0/1 has no magic).
    return named(path)


def sniff_file(path: str) -> str | None:
    """The format of a file on disk (None if it cannot be read)."""
    from gate import paths

    try:
        with paths.open_regular(path) as f:
            prefix = f.read(SNIFF_BYTES)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    return sniff(prefix, path, size)
