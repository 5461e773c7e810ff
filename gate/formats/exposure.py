"""The outcome of reading a file as every common loader would (formats.loaders), as a value.

Kept apart from the scanner itself so that a warm run, which takes these from the stat cache,
imports nothing heavier than json.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

Kind = Literal["none", "data", "code"]  # of a stream: not a pickle, plain values, imports


@dataclasses.dataclass(frozen=True)
class PickleScan:
    """Every way a common loader could unpickle part of a file, and what that would import."""

    globals: tuple[str, ...]
    refused: tuple[str, ...]  # not in ALLOWED; dangerous ones (per picklescan) first
    dangerous: tuple[str, ...]
    error: str | None = None  # what could not be read as its loaders read it: fail closed
    risk: str | None = None  # the part of `error` where a loader would run what was not followed
    loads: tuple[str, ...] = ()  # how loaders unpickle it, e.g. "pickle.load: the file itself"
    raw: Kind = "none"  # the file itself, read by pickle.load from byte 0
    structure: str | None = None  # another format the bytes also are (zip, tar, npy ...)
    pickle: bool = False  # some loader unpickles part of this file

    @property
    def ok(self) -> bool:
        return self.error is None and not self.refused

    @property
    def polyglot(self) -> bool:
        """Both a pickle that imports something and another format: loaders disagree on it."""
        return self.raw == "code" and self.structure is not None

    @property
    def executable(self) -> bool:
        """Loading it (as any loader would) can import something outside the allowlist, or
        would run something the scan could not follow."""
        return bool(self.refused) or self.risk is not None


def to_json(scan: PickleScan) -> str:
    """The scan as JSON (for the stat cache)."""
    return json.dumps(dataclasses.asdict(scan), separators=(",", ":"))


def from_json(text: str) -> PickleScan:
    """A scan stored by to_json; ValueError/KeyError/TypeError when it is not one."""
    doc = json.loads(text)
    tuples = {
        f: tuple(str(x) for x in doc[f]) for f in ("globals", "refused", "dangerous", "loads")
    }
    raw = doc["raw"]
    if raw not in ("none", "data", "code"):
        raise ValueError(raw)
    return PickleScan(
        **tuples,
        error=None if doc["error"] is None else str(doc["error"]),
        risk=None if doc["risk"] is None else str(doc["risk"]),
        raw=raw,
        structure=None if doc["structure"] is None else str(doc["structure"]),
        pickle=bool(doc["pickle"]),
    )
