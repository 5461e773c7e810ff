"""Positions of keys and values in a YAML document, kept apart from the (heavy) YAML parser."""

from __future__ import annotations

import dataclasses
from typing import Any

# A manifest or card front matter is hand-written text; anything larger is hostile or a mistake.
MAX_YAML_BYTES = 1 << 20

PathKey = tuple[str | int, ...]


@dataclasses.dataclass
class Positions:
    """1-based positions of every key and value in a loaded document, by path."""

    keys: dict[PathKey, tuple[int, int]] = dataclasses.field(default_factory=dict)
    values: dict[PathKey, tuple[int, int]] = dataclasses.field(default_factory=dict)

    def locate(self, path: PathKey, *, key: bool = False) -> tuple[int, int]:
        """Position of path (its key when key=True), falling back to the nearest ancestor."""
        p = tuple(path)
        table = self.keys if key else self.values
        while True:
            found = table.get(p) or self.keys.get(p) or self.values.get(p)
            if found is not None:
                return found
            if not p:
                return 1, 1
            p = p[:-1]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable form (for the parse cache)."""
        return {
            "keys": [[list(k), *v] for k, v in self.keys.items()],
            "values": [[list(k), *v] for k, v in self.values.items()],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Positions:
        return cls(
            keys={tuple(p): (int(line), int(col)) for p, line, col in doc["keys"]},
            values={tuple(p): (int(line), int(col)) for p, line, col in doc["values"]},
        )
