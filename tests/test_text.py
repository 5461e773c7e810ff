"""Text from the repository made safe to store and print (gate/text.py)."""

from __future__ import annotations

import pytest

from gate import text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("w\udcff.bin", "w\\xff.bin"),  # a byte that was not UTF-8 (os.fsdecode)
        ("\ud800x", "\\ud800x"),  # a lone surrogate from a JSON escape
        ("plain ünïcode", "plain ünïcode"),
    ],
)
def test_storable_is_always_valid_utf8(raw: str, shown: str) -> None:
    assert text.storable(raw) == shown
    text.storable(raw).encode("utf-8")


def test_visible_escapes_controls_and_bidi_but_keeps_lines() -> None:
    assert text.visible("a\x1b[2Jb\rc\u202ed\x85e\nf\tg") == "a\\x1b[2Jb\\x0dc\\u202ed\\x85e\nf\tg"
    assert text.one_line("a\nb\tc") == "a\\nb\\tc"


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("::error::x", "\\x3a:error::x"),
        ("  \t::warning::x", "  \t\\x3a:warning::x"),
        ("ok\n::notice::x", "ok\n\\x3a:notice::x"),
        ("a ##[stop-commands]t b", "a \\x23#[stop-commands]t b"),
        ("hf://owner/name and a::b", "hf://owner/name and a::b"),  # mid-line `::` is inert
    ],
)
def test_no_workflow_command_survives(raw: str, safe: str) -> None:
    assert text.no_commands(raw) == safe


def test_markdown_is_literal_text_in_one_cell() -> None:
    out = text.markdown("<!-- x --> # [a](b) | *c* `d` $e$\nnext\rline")
    assert out == "&lt;!-- x --&gt; &#35; \\[a\\](b) \\| \\*c\\* \\`d\\` \\$e\\$<br>next\\\\x0dline"
