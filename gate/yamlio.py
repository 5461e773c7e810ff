"""Safe, located YAML reading and comment-preserving writing (ruamel.yaml round-trip).

Imported only when a manifest must really be parsed: a cached, unchanged manifest never loads
ruamel (start-up time of warm pre-commit runs).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import re
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, NodeEvent

from gate.positions import MAX_YAML_BYTES, PathKey, Positions

# Aliases let a few bytes expand into an exponentially large document ("billion laughs"); a
# manifest never needs them, so they are refused rather than bounded.
# Only the JSON-compatible core tags; anything else (!!python/..., custom tags) is refused.
_ALLOWED_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")
) | {"!"}


@dataclasses.dataclass(frozen=True)
class YamlProblem:
    """A YAML document that could not be used; kind selects the rule (syntax or unsafe)."""

    kind: str  # "syntax" | "unsafe"
    message: str
    line: int
    column: int


def _pos(value: Any, fallback: tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value[0] + 1, value[1] + 1
    return fallback


def _walk(node: Any, path: PathKey, pos: Positions) -> None:
    here = pos.values.get(path, (1, 1))
    if isinstance(node, CommentedMap):
        for k in node:
            kl, kc = _pos(node.lc.key(k), here)
            vl, vc = _pos(node.lc.value(k), (kl, kc))
            child = (*path, str(k))
            pos.keys[child] = (kl, kc)
            value = node[k]
            if isinstance(value, CommentedMap | CommentedSeq) and len(value) > 0:
                pos.values[child] = (kl, kc)
            else:
                pos.values[child] = (vl, vc)
            _walk(value, child, pos)
    elif isinstance(node, CommentedSeq):
        for i, item in enumerate(node):
            at = _pos(node.lc.item(i), here)
            pos.keys[(*path, i)] = at
            pos.values[(*path, i)] = at
            _walk(item, (*path, i), pos)


def to_plain(node: Any) -> Any:
    """Convert ruamel's round-trip containers and scalars to plain JSON-like Python values."""
    if isinstance(node, dict):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node  # dates and other YAML types: left for the schema to reject


def _rt_yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap a user's long lines
    return y


# ruamel's scanner is quadratic in flow nesting ("[[[[..."): a 10 kB manifest would take minutes.
MAX_FLOW_DEPTH = 32
MAX_DEPTH = 64


def _nesting_problem(text: str) -> YamlProblem | None:
    """Refuse deep flow nesting before the YAML scanner sees it."""
    if text.count("[") + text.count("{") <= MAX_FLOW_DEPTH:
        return None
    depth, line, col, quote, comment, prev = 0, 1, 0, "", False, " "
    for ch in text:
        col += 1
        if ch == "\n":
            line, col, comment = line + 1, 0, False
        elif comment:
            pass
        elif quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and prev in " \t":
            comment = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_FLOW_DEPTH:
                return YamlProblem(
                    "unsafe", f"nested deeper than {MAX_FLOW_DEPTH} levels", line, col
                )
        elif ch in "]}":
            depth = max(0, depth - 1)
        prev = ch
    return None


def _events_problem(text: str) -> YamlProblem | None:
    y = _rt_yaml()
    depth = 0
    try:
        for event in y.parse(text):
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:  # deeper documents would exhaust recursion later
                    m = event.start_mark
                    return YamlProblem(
                        "unsafe", f"nested deeper than {MAX_DEPTH} levels", m.line + 1, m.column + 1
                    )
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
            if isinstance(event, AliasEvent):
                m = event.start_mark
                return YamlProblem(
                    "unsafe", "YAML aliases (*name) are not allowed", m.line + 1, m.column + 1
                )
            if isinstance(event, NodeEvent):
                tag = getattr(event, "tag", None)
                tag_text = getattr(tag, "value", tag)
                if tag_text and str(tag_text) not in _ALLOWED_TAGS:
                    m = event.start_mark
                    return YamlProblem(
                        "unsafe", f"YAML tag {tag_text!s} is not allowed", m.line + 1, m.column + 1
                    )
    except MarkedYAMLError as e:
        return _marked(e)
    except YAMLError as e:
        return YamlProblem("syntax", str(e), 1, 1)
    return None


_OPENED = {"flow sequence": "`[`", "flow mapping": "`{`", "quoted scalar": "the quote"}


def _marked(e: MarkedYAMLError) -> YamlProblem:
    """Located where the problem began: an unclosed `[`, `{` or quote at the line that opened
    it (the parser only notices lines later), the problem's own position otherwise."""
    start, end = e.context_mark, e.problem_mark
    opened = next((v for k, v in _OPENED.items() if e.context and k in e.context), None)
    if opened and start is not None and end is not None and start.line != end.line:
        return YamlProblem(
            "syntax",
            f"{opened} opened here is not closed: {e.problem} at line {end.line + 1}, column"
            f" {end.column + 1}",
            start.line + 1,
            start.column + 1,
        )
    mark = end or start
    line = mark.line + 1 if mark is not None else 1
    col = mark.column + 1 if mark is not None else 1
    parts = [p for p in (e.context, e.problem) if p]
    return YamlProblem("syntax", "; ".join(parts) or "invalid YAML", line, col)


def decode(data: bytes) -> tuple[str | None, YamlProblem | None]:
    """Decode YAML bytes as UTF-8, locating the first bad byte."""
    if len(data) > MAX_YAML_BYTES:
        return None, YamlProblem(
            "unsafe", f"{len(data)} bytes is over the {MAX_YAML_BYTES}-byte limit", 1, 1
        )
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        before = data[: e.start]
        line = before.count(b"\n") + 1
        col = e.start - (before.rfind(b"\n") + 1) + 1
        return None, YamlProblem("syntax", "not valid UTF-8", line, col)


def load(text: str) -> tuple[Any, Positions, YamlProblem | None]:
    """Load one YAML document with positions; problems are values, never exceptions."""
    problem = _nesting_problem(text) or _events_problem(text)
    if problem is not None:
        return None, Positions(), problem
    try:
        data = _rt_yaml().load(text)
    except MarkedYAMLError as e:
        return None, Positions(), _marked(e)
    except (YAMLError, RecursionError, ValueError, TypeError) as e:
        # TypeError: a mapping used as a mapping key (`? {a: 1}: x`), found by fuzz/fuzz.py.
        return None, Positions(), YamlProblem("syntax", f"invalid YAML: {e}", 1, 1)
    pos = Positions()
    if isinstance(data, CommentedMap | CommentedSeq):
        pos.values[()] = (data.lc.line + 1, data.lc.col + 1)
    _walk(data, (), pos)
    return data, pos, None


_SEQ_ITEM = re.compile(r"^( *)- ")
_KEY_ONLY = re.compile(r"^( *)[^\s#-][^:]*:\s*(#.*)?$")


def detect_indent(text: str) -> tuple[int, int, int]:
    """Guess (mapping, sequence, offset) indentation so a rewrite keeps the user's layout."""
    mapping = 2
    lines = text.splitlines()
    for prev, cur in itertools.pairwise(lines):
        pk, ck = _KEY_ONLY.match(prev), re.match(r"^( *)[^\s#-]", cur)
        if pk and ck and len(ck.group(1)) > len(pk.group(1)):
            mapping = len(ck.group(1)) - len(pk.group(1))
            break
    for prev, cur in itertools.pairwise(lines):
        pk, item = _KEY_ONLY.match(prev), _SEQ_ITEM.match(cur)
        if pk and item:
            offset = len(item.group(1)) - len(pk.group(1))
            return mapping, offset + 2, max(offset, 0)
    return mapping, mapping + 2, mapping


def dump(data: Any, like: str) -> str:
    """Serialise a round-trip document in the indentation style of the text it came from."""
    y = _rt_yaml()
    mapping, sequence, offset = detect_indent(like)
    y.indent(mapping=mapping, sequence=max(sequence, offset + 2), offset=offset)
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()
