"""License ids, the terms base licenses impose on derivatives, LICENSE texts, and the policy.

Identifiers are Hugging Face Hub license ids (`llama2`, `gemma`, `other` …) or SPDX expressions,
parsed and normalised by the `license-expression` library; Hub ids may appear inside an
expression (`llama3.1 OR mit`). What each license requires of a derivative is data
(`gate/data/licenses.json`: one class per id, one row per class with its source). This catches
contradictions in declarations; it is not legal advice.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from importlib import resources
from typing import Any, Literal

Node = tuple[str, Any]  # ("id", "apache-2.0") | ("and" | "or", [Node, ...])
# A declaration is a line of YAML, not a program: bounded before the recursive parser sees it.
MAX_EXPRESSION_CHARS = 4096
MAX_NESTING = 16


def _depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    return deepest


@functools.cache
def data() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        resources.files("gate").joinpath("data", "licenses.json").read_text("utf-8")
    )
    return loaded


@dataclasses.dataclass(frozen=True)
class License:
    """A parsed license declaration."""

    text: str
    tree: Node | None  # None when invalid
    error: str | None = None

    @property
    def ids(self) -> tuple[str, ...]:
        out: list[str] = []

        def walk(n: Node) -> None:
            if n[0] == "id":
                out.append(n[1])
            else:
                for c in n[1]:
                    walk(c)

        if self.tree is not None:
            walk(self.tree)
        return tuple(out)

    @property
    def normalized(self) -> str:
        def render(n: Node, top: bool = True) -> str:
            if n[0] == "id":
                return str(n[1])
            inner = f" {n[0].upper()} ".join(render(c, False) for c in n[1])
            return inner if top else f"({inner})"

        return render(self.tree) if self.tree is not None else self.text

    def is_(self, hub_id: str) -> bool:
        return self.tree == ("id", hub_id)


def parse(text: str) -> License:
    """Parse a license declaration; unknown identifiers make it invalid (never a pass)."""
    from license_expression import get_spdx_licensing

    stripped = text.strip()
    hub = data()["hub_ids"]
    if stripped.lower() in hub:
        return License(text, ("id", stripped.lower()))
    if len(stripped) > MAX_EXPRESSION_CHARS or _depth(stripped) > MAX_NESTING:
        return License(
            text,
            None,
            f"expression over {MAX_EXPRESSION_CHARS} characters or"
            f" {MAX_NESTING} levels of parentheses",
        )
    licensing = get_spdx_licensing()
    try:
        expr = licensing.parse(stripped, validate=False)
    except Exception as e:  # the library raises several types, some of them by accident
        return License(text, None, f"not a valid license expression ({type(e).__name__})")
    if expr is None:
        return License(text, None, "empty license expression")
    unknown: list[str] = []

    def convert(e: Any) -> Node:
        if hasattr(e, "args") and e.args and type(e).__name__ in ("AND", "OR"):
            return (type(e).__name__.lower(), [convert(a) for a in e.args])
        symbol = getattr(e, "license_symbol", e)  # X WITH exception: X's terms
        key = str(symbol.key)
        if key.lower() in hub:
            return ("id", key.lower())
        if key in licensing.known_symbols:
            return ("id", key)
        unknown.append(key)
        return ("id", key)

    tree = convert(expr)
    if unknown:
        return License(text, None, f"unknown license id(s): {', '.join(unknown)}")
    return License(text, tree)


def class_of(license_id: str) -> str:
    """The inheritance class of one id (Hub ids from the table, SPDX ids by family)."""
    hub = data()["hub_ids"]
    low = license_id.lower()
    if low in hub:
        return str(hub[low]["class"])
    families = [
        ("cc-by-nc-nd-", "noderivatives-nc"),
        ("cc-by-nc-sa-", "noncommercial-sharealike"),
        ("cc-by-nc-", "noncommercial"),
        ("cc-by-nd-", "noderivatives"),
        ("cc-by-sa-", "sharealike"),
        ("cc-by-", "permissive"),
        ("agpl-", "copyleft"),
        ("lgpl-", "copyleft"),
        ("gpl-", "copyleft"),
        ("mpl-", "copyleft"),
        ("epl-", "copyleft"),
        ("eupl-", "copyleft"),
        ("bsd-", "permissive"),
        ("apache-", "permissive"),
    ]
    for prefix, cls in families:
        if low.startswith(prefix):
            return cls
    permissive = {"mit", "isc", "zlib", "0bsd", "cc0-1.0", "unlicense"}
    return "permissive" if low in permissive else "unclassified"


def terms(license_id: str) -> dict[str, Any]:
    return dict(data()["classes"][class_of(license_id)], id=license_id, cls=class_of(license_id))


Commercial = Literal["yes", "no", "conditional", "unknown"]


def commercial(lic: License) -> Commercial:
    """Whether commercial use is allowed: an OR lets the user pick, an AND must allow all."""
    rank = {"no": 0, "unknown": 1, "conditional": 2, "yes": 3}

    def walk(n: Node) -> str:
        if n[0] == "id":
            return str(terms(n[1])["commercial"])
        parts = [walk(c) for c in n[1]]
        pick = max if n[0] == "or" else min
        return pick(parts, key=lambda p: rank[p])

    if lic.tree is None:
        return "unknown"
    out = walk(lic.tree)
    return out  # type: ignore[return-value]


def identify_text(text: str) -> str | None:
    """The license a LICENSE file's text is, from distinctive phrases (None: not recognised)."""
    norm = _normalise(text)
    for license_id, alternatives in data()["texts"].items():
        for phrases in alternatives:
            if all(_normalise(p) in norm for p in phrases):
                return str(license_id)
    return None


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def same_family(a: str, b: str) -> bool:
    fam = data()["classes"][class_of(b)].get("family")
    return bool(fam) and a.lower() in fam


def derivative_ok(base_id: str, derived: License) -> bool:
    """Whether a derivative declared under `derived` honours what base_id requires."""
    t = terms(base_id)
    ids = [i.lower() for i in derived.ids]
    rule = t["derivative"]
    if rule == "any":
        return True
    if rule == "forbidden":
        return False
    if rule == "same":
        return any(_equivalent(base_id.lower(), i) for i in ids)
    if rule == "same-family":
        return any(same_family(i, base_id) for i in ids)
    if rule == "noncommercial":
        return any(_equivalent(base_id.lower(), i) for i in ids) or commercial(derived) == "no"
    return True  # unknown terms are reported separately, never as a pass of the rule


def _equivalent(a: str, b: str) -> bool:
    """Hub and SPDX spellings of one license: gpl-3.0 / GPL-3.0-only / GPL-3.0-or-later."""
    return a == b or a.startswith(b + "-") or b.startswith(a + "-")


def satisfied(base: License, derived: License) -> bool:
    """An OR base is honoured when one option is; an AND base when all are."""

    def walk(n: Node) -> bool:
        if n[0] == "id":
            return derivative_ok(str(n[1]), derived)
        results = [walk(c) for c in n[1]]
        return any(results) if n[0] == "or" else all(results)

    return base.tree is not None and walk(base.tree)


def unknown_terms(lic: License) -> list[str]:
    return [i for i in lic.ids if terms(i)["derivative"] == "unknown"]


def strictest(base: License) -> dict[str, Any]:
    """The row that explains a failure: the first id whose terms the derivative breaks."""
    for i in base.ids:
        if terms(i)["derivative"] not in ("any", "unknown"):
            return terms(i)
    return terms(base.ids[0])


def consistent_declaration(base: License) -> str:
    t = strictest(base)
    rule = t["derivative"]
    if rule == "forbidden":
        return "none: the base's license allows no shared derivatives"
    if rule == "noncommercial":
        return f"license: {t['id']} (or another non-commercial license), commercial_use: false"
    if rule == "same-family":
        return f"license: {t['id']} (or another OpenRAIL license carrying its use restrictions)"
    return f"license: {t['id']}"


def in_list(lic: License, listed: tuple[str, ...]) -> bool:
    """Whether every option the expression requires is in the list (OR: one of them)."""
    norm = {parse(x).normalized.lower() for x in listed} | {x.lower() for x in listed}

    def walk(n: Node) -> bool:
        if n[0] == "id":
            return str(n[1]).lower() in norm
        results = [walk(c) for c in n[1]]
        return any(results) if n[0] == "or" else all(results)

    return lic.tree is not None and (lic.normalized.lower() in norm or walk(lic.tree))


def denied(lic: License, listed: tuple[str, ...]) -> bool:
    """Whether the expression forces a listed license: any part of an AND, every option of an
    OR (with one option left, the user can pick it)."""
    norm = {x.lower() for x in listed} | {parse(x).normalized.lower() for x in listed}

    def walk(n: Node) -> bool:
        if n[0] == "id":
            return str(n[1]).lower() in norm
        results = [walk(c) for c in n[1]]
        return all(results) if n[0] == "or" else any(results)

    return lic.tree is not None and walk(lic.tree)
