"""Contract every check keeps: each finding says what was declared and what was found."""

from __future__ import annotations

import ast
from pathlib import Path

import gate


def test_every_finding_names_declared_and_found() -> None:
    missing = []
    for path in Path(gate.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "make":
                keywords = {k.arg for k in node.keywords}
                if not {"declared", "found"} <= keywords:
                    missing.append(f"{path.name}:{node.lineno}")
    assert missing == []


def test_every_rule_is_documented_in_the_readme() -> None:
    from gate import rules

    readme = (Path(gate.__file__).parent.parent / "README.md").read_text()
    for rule_id in rules.RULES:
        assert f"| {rule_id} |" in readme, rule_id
