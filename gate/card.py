"""Model card (README.md) front matter, read with the same caps and YAML safety as manifests."""

from __future__ import annotations

import os
from typing import Any

from gate import paths, yamlio
from gate.positions import MAX_YAML_BYTES

MAX_CARD_BYTES = 4 << 20


def front_matter(root: str, rel: str) -> dict[str, Any] | None:
    """The card's YAML front matter as plain data; None when absent, unsafe or malformed."""
    real, escape = paths.resolve_inside(root, rel)
    if escape is not None or not os.path.isfile(real):
        return None
    try:
        with paths.open_regular(real) as f:
            data = paths.read_capped(f, MAX_CARD_BYTES)[:MAX_CARD_BYTES]
    except OSError:
        return None
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return None
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() in ("---", "..."):
            block = "".join(lines[1:i])
            if len(block.encode()) > MAX_YAML_BYTES:
                return None
            doc, _, problem = yamlio.load(block)
            if problem is not None or not isinstance(doc, dict):
                return None
            plain: dict[str, Any] = yamlio.to_plain(doc)
            return plain
    return None
