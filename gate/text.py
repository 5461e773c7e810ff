"""Text from files strangers wrote, made safe to store and to print.

Names and values in findings come from the repository (file names, tensor names, card values).
They may hold what UTF-8 cannot carry (lone surrogates: JSON `\\ud800` escapes, file names with
bytes that are not UTF-8), what rewrites a terminal (ESC, CR, other controls, bidirectional
overrides), or what a CI runner executes: GitHub Actions reads workflow commands from the
output of a step, a line starting with `::` and, in the legacy form, `##[` anywhere in a line
(`##[stop-commands]` silences later annotations, `##[error]` forges one). Escapes are visible
and Python-like (`\\x1b`, `\\u202e`), so a reader sees that something was there.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"  # C0 and C1 controls except tab and newline, DEL
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidirectional marks and overrides
    "\u2028\u2029\ufeff]"  # line and paragraph separators, byte-order mark
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_LEGACY_COMMAND = "##["
_COMMAND = re.compile(r"^(\s*):(?=:)", re.MULTILINE)


def _escape(ch: str) -> str:
    n = ord(ch)
    if 0xDC80 <= n <= 0xDCFF:  # a byte that was not UTF-8, as os.fsdecode keeps it
        return f"\\x{n - 0xDC00:02x}"
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def storable(s: str) -> str:
    """s with lone surrogates escaped: valid Unicode, so it can be written as UTF-8."""
    return _SURROGATE.sub(lambda m: _escape(m.group()), s) if _SURROGATE.search(s) else s


def has_surrogates(s: str) -> bool:
    return _SURROGATE.search(s) is not None


def visible(s: str) -> str:
    """s for a terminal or a log: controls (except newline and tab), bidirectional overrides
    and lone surrogates escaped."""
    s = storable(s)
    return _UNSAFE.sub(lambda m: _escape(m.group()), s) if _UNSAFE.search(s) else s


def one_line(s: str) -> str:
    """visible(s) with newlines and tabs escaped too: a value inside one line of output."""
    return visible(s).replace("\n", "\\n").replace("\t", "\\t")


def no_legacy_commands(text: str, escape: str = "\\x23") -> str:
    """text without `##[` (a runner command anywhere in a line): its first `#` written as
    `escape` (visible text: `\\x23`; JSON: `\\u0023`, which keeps the value)."""
    return text.replace(_LEGACY_COMMAND, escape + "#[") if _LEGACY_COMMAND in text else text


def no_commands(text: str) -> str:
    """text in which no line starts a GitHub workflow command and no `##[` appears: the first
    character of each is escaped (`\\x3a:`, `\\x23#[`), visibly."""
    return _COMMAND.sub(lambda m: m.group(1) + "\\x3a", no_legacy_commands(text))


def json_document(doc: object, **options: object) -> str:
    """Indented JSON for a file or a CI log: lines of indented JSON cannot start with `::`, and
    `##[` is written with a JSON escape."""
    import json

    settings: dict[str, object] = {"indent": 2, "ensure_ascii": False, **options}
    dumped = json.dumps(doc, **settings)  # type: ignore[arg-type]
    return no_legacy_commands(dumped, "\\u0023") + "\n"


# Characters that Markdown or GitHub's renderer give a meaning to; each is written so it shows
# as itself: HTML-significant ones as entities (a raw tag or comment could hide the rest of a
# summary), the rest with a backslash, which CommonMark allows before any ASCII punctuation.
_MARKDOWN = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "#": "&#35;"}
_MARKDOWN.update({c: "\\" + c for c in "\\`*_[]|~$"})


def markdown(s: str) -> str:
    """s as literal text inside a Markdown table cell or a line: no markup, no HTML, one line."""
    s = "".join(_MARKDOWN.get(c, c) for c in visible(s))
    return s.replace("\n", "<br>").replace("\t", " ")
