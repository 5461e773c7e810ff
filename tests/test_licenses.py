"""License ids and expressions, the inheritance table's logic, LICENSE texts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gate import licenses


def test_hub_ids_and_spdx_expressions() -> None:
    assert licenses.parse("Llama3.1").tree == ("id", "llama3.1")
    assert licenses.parse("apache-2.0").normalized == "apache-2.0"
    mixed = licenses.parse("mit and (llama3.1 or GPL-2.0-only WITH Classpath-exception-2.0)")
    assert mixed.normalized == "mit AND (llama3.1 OR GPL-2.0-only)"
    assert mixed.ids == ("mit", "llama3.1", "GPL-2.0-only")
    assert licenses.parse("apache2").error == "unknown license id(s): apache2"
    assert licenses.parse("MIT AND").error is not None
    assert licenses.parse("").error is not None


def test_classes_for_hub_and_spdx_ids() -> None:
    assert licenses.class_of("llama3.3") == "llama3.1"
    assert licenses.class_of("CC-BY-NC-SA-2.5") == "noncommercial-sharealike"
    assert licenses.class_of("GPL-3.0-or-later") == "copyleft"
    assert licenses.class_of("Elastic-2.0") == "unclassified"


def test_commercial_use_under_or_and_and() -> None:
    assert licenses.commercial(licenses.parse("mit OR cc-by-nc-4.0")) == "yes"
    assert licenses.commercial(licenses.parse("mit AND cc-by-nc-4.0")) == "no"
    assert licenses.commercial(licenses.parse("llama2")) == "conditional"
    assert licenses.commercial(licenses.parse("other")) == "unknown"
    assert licenses.commercial(licenses.parse("bogus-id")) == "unknown"


def test_license_texts_are_identified() -> None:
    gpl3 = "GNU GENERAL PUBLIC LICENSE\n Version 3, 29 June 2007\n"
    lgpl3 = "GNU LESSER GENERAL PUBLIC LICENSE\nVersion 3, 29 June 2007\n... the GNU General Public"
    assert licenses.identify_text(gpl3) == "gpl-3.0"
    assert licenses.identify_text(lgpl3) == "lgpl-3.0"
    assert (
        licenses.identify_text("LLAMA 2 COMMUNITY LICENSE AGREEMENT\nLlama 2 Version") == "llama2"
    )
    assert licenses.identify_text("Attribution-NonCommercial 4.0 International Public License") == (
        "cc-by-nc-4.0"
    )
    assert licenses.identify_text("All rights reserved.") is None


@given(st.text(max_size=80))
def test_any_declaration_parses_to_a_value(text: str) -> None:
    lic = licenses.parse(text)
    assert (lic.tree is None) == (lic.error is not None)
    licenses.commercial(lic)


def test_hostile_expressions_are_bounded() -> None:
    deep = "MIT"
    for i in range(3000):  # the recursive parser would overflow the stack
        deep = f"Apache-2.0 {'OR' if i % 2 else 'AND'} ({deep})"
    assert licenses.parse(deep).error == (
        "expression over 4096 characters or 16 levels of parentheses"
    )
    assert licenses.parse(" OR ".join(["MIT"] * 1000)).error is not None
    assert licenses.parse("((((MIT))))").normalized == "mit"  # the Hub spelling wins
