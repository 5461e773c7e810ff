"""One reader per checkpoint format, plus byte sniffing (content decides, not the extension)."""

from __future__ import annotations

from collections.abc import Iterable

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
