"""Contract every check keeps: each finding says what was declared and what was found."""

from __future__ import annotations

import ast
from pathlib import Path

import gate


def test_every_finding_names_declared_and_found() -> None:
    missing = []
    calls = 0
    for path in Path(gate.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "finding":
                calls += 1
                keywords = {k.arg for k in node.keywords}
                if not {"declared", "found"} <= keywords:
                    missing.append(f"{path.name}:{node.lineno}")
    assert missing == []
    assert calls > 90  # the walk found the call sites (Rule.finding)


def test_rule_constants_are_named_by_their_ids() -> None:
    from gate import rules

    named = {k: v for k, v in vars(rules).items() if isinstance(v, rules.Rule)}
    assert all(k == v.id for k, v in named.items())
    assert list(rules.RULES) == list(named)


def test_no_formatter_pragmas() -> None:
    """Findings are one short call (Rule.finding): nothing needs hand layout."""
    pragma = "# fmt: " + "skip"
    found = [p.name for p in Path(gate.__file__).parent.rglob("*.py") if pragma in p.read_text()]
    assert found == []


def test_findings_travel_as_return_values_only() -> None:
    """No function fills a findings list it was given (an `out:` parameter), and no object
    collects findings on the side (`self.findings.append`): a check returns what it found."""
    filled: list[str] = []
    for path in Path(gate.__file__).parent.rglob("*.py"):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, ast.FunctionDef):
                continue
            given = {
                a.arg
                for a in fn.args.args + fn.args.kwonlyargs
                if a.annotation is not None and "Finding" in ast.unparse(a.annotation)
            }
            for node in ast.walk(fn):
                target: ast.expr | None = None
                line = getattr(node, "lineno", 0)
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    if node.func.attr in ("append", "extend", "insert"):
                        target = node.func.value
                elif isinstance(node, ast.AugAssign):
                    target = node.target
                if isinstance(target, ast.Name) and target.id in given:
                    filled.append(f"{path.name}:{line} {fn.name} fills `{target.id}`")
                if isinstance(target, ast.Attribute) and target.attr == "findings":
                    filled.append(f"{path.name}:{line} {fn.name} collects findings")
    assert filled == []


def test_every_rule_is_documented_in_the_readme() -> None:
    from gate import rules

    readme = (Path(gate.__file__).parent.parent / "README.md").read_text()
    for rule_id in rules.RULES:
        assert f"| {rule_id} |" in readme, rule_id


def test_every_module_says_what_it_holds() -> None:
    """A module's name and its docstring's first line are a newcomer's map (docs/architecture)."""
    silent = [
        str(p.relative_to(Path(gate.__file__).parent))
        for p in Path(gate.__file__).parent.rglob("*.py")
        if not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert silent == []
