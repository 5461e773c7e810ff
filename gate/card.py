"""Model card (README.md) front matter, read with the same caps and YAML safety as manifests."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any

from gate import paths
from gate.positions import MAX_YAML_BYTES, Positions
from gate.text import storable

if TYPE_CHECKING:
    from gate.manifest import Memo

MAX_CARD_BYTES = 4 << 20


@dataclasses.dataclass(frozen=True)
class Card:
    """A model card's front matter with the line of every key in the card file."""

    path: str
    data: dict[str, Any]
    positions: Positions

    def line(self, *path: str | int) -> int:
        return self.positions.locate(path)[0]


def read(root: str, rel: str, memo: Memo | None = None) -> Card | None:
    """The card's front matter with positions; None when absent, unsafe or malformed. With a
    memo, front matter already parsed is not parsed again (a warm run never imports ruamel)."""
    return _parse(_block(root, rel), rel, memo)


def from_bytes(data: bytes, display: str, memo: Memo | None = None) -> Card | None:
    """The same, for a card's bytes read from elsewhere (a Hub base's README.md)."""
    return _parse(_front(data[:MAX_CARD_BYTES]), display, memo)


def _parse(block: str | None, rel: str, memo: Memo | None) -> Card | None:
    if block is None:
        return None
    raw = block.encode()
    hit = memo.memo_get("card", raw) if memo is not None else None
    if hit is not None:
        cached = json.loads(hit)
        if cached is None:
            return None
        return Card(rel, cached["data"], Positions.from_json(cached["positions"]))
    from gate import yamlio

    doc, pos, problem = yamlio.load(block)
    card = None
    if problem is None and isinstance(doc, dict):
        shifted = Positions(
            keys={k: (line + 1, col) for k, (line, col) in pos.keys.items()},
            values={k: (line + 1, col) for k, (line, col) in pos.values.items()},
        )  # the block starts on the card's second line, after `---`
        card = Card(rel, _storable(yamlio.to_plain(doc)), shifted)
    if memo is not None:
        payload = (
            None if card is None else {"data": card.data, "positions": card.positions.to_json()}
        )
        memo.memo_put("card", raw, json.dumps(payload, ensure_ascii=False, default=str))
    return card


def _block(root: str, rel: str) -> str | None:
    real, escape = paths.resolve_inside(root, rel)
    if escape is not None or not os.path.isfile(real):
        return None
    try:
        with paths.open_regular(real) as f:
            data = paths.read_capped(f, MAX_CARD_BYTES)[:MAX_CARD_BYTES]
    except OSError:
        return None
    return _front(data)


def _front(data: bytes) -> str | None:
    lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return None
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() in ("---", "..."):
            block = "".join(lines[1:i])
            return block if len(block.encode()) <= MAX_YAML_BYTES else None
    return None


def _storable(value: Any) -> Any:
    """A card's values with lone surrogates escaped: a card is third-party text, reported
    as it is, and a report must be valid Unicode."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def strings(value: Any) -> tuple[list[str], bool]:
    """A card field that is a string or a list of strings (`base_model`), as a list, and
    whether anything else was there (a number, a mapping ...)."""
    if value is None:
        return [], False
    if isinstance(value, str):
        return [value], False
    if isinstance(value, list):
        found = [v for v in value if isinstance(v, str)]
        return found, len(found) != len(value)
    return [], True


def front_matter(root: str, rel: str) -> dict[str, Any] | None:
    """The card's YAML front matter as plain data; None when absent, unsafe or malformed."""
    card = read(root, rel)
    return None if card is None else card.data
