"""One reader per checkpoint format, plus byte sniffing (content decides, not the extension)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from gate.errors import FormatError


def tiled_end(spans: Iterable[tuple[str, int, int]], noun: str) -> int:
    """Where spans (name, begin, end), sorted by begin, end when they tile from offset 0 with no
    gap and no overlap (safetensors tensors, zip entries); FormatError naming the first that
    does not."""
    expected = 0
    for name, begin, end in spans:
        if begin != expected:
            kind = f"overlaps the previous {noun}" if begin < expected else "leaves a gap"
            raise FormatError(f"{noun} {name!r} at offset {begin} {kind} (expected {expected})")
        expected = end
    return expected


@dataclasses.dataclass(frozen=True)
class Region:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # relative to the data section
    end: int
    width: int  # bytes of one element (or one quantisation block): the unit of constancy


@dataclasses.dataclass(frozen=True)
class Plan:
    regions: tuple[Region, ...]  # sorted by begin
    base: int  # absolute offset of the data section
    # tensors whose bytes are in other files (ONNX external data): (location relative to the
    # file's folder, as written; region at absolute offsets in that file)
    external: tuple[tuple[str, Region], ...] = ()


def plan_of(tensors: Iterable[Any], base: int, width: Callable[[Any], int]) -> Plan:
    regions = (Region(t.name, t.dtype, t.shape, t.begin, t.end, width(t)) for t in tensors)
    return Plan(tuple(regions), base)


class HeaderReader(Protocol):
    """Reads a format's header from the chunks hashing streams past (one read per byte), then
    plans the per-tensor digests: FormatSpec.header makes one per file."""

    @property
    def header(self) -> object | None: ...  # the parsed header, once complete

    @property
    def error(self) -> str | None: ...  # why it is malformed

    def feed(self, chunk: memoryview, offset: int) -> bool: ...

    @property
    def plan(self) -> Plan | None: ...
