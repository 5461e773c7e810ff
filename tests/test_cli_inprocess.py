"""The command line in-process (click's CliRunner): options, exit codes and streams, fast. A few
real-process smoke tests stay in test_cli.py and test_newcomer.py."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gate import cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
_PY = {"boolean": bool, "integer": int, "float": float, "text": str}


def _python_type(p: click.Parameter) -> object:
    t = p.type
    if isinstance(t, click.IntRange):
        base: object = int
    elif isinstance(t, click.FloatRange):
        base = float
    elif isinstance(t, (click.Choice, click.Path, cli.ReportCopy)):
        base = str
    else:
        base = _PY[t.name]
    if p.multiple:
        return tuple[base, ...]  # type: ignore[valid-type]
    # no default: None (click >= 8.3 says so with a sentinel; a flag's is False)
    unset = type(p.default).__name__ == "Sentinel" and not getattr(p, "is_flag", False)
    optional = not p.required and (p.default is None or unset)
    return base | None if optional else base  # type: ignore[operator]


def test_click_option_types_match_the_annotated_parameters() -> None:
    writer = typing.get_type_hints(cli._run_writer)
    for name, command in cli.cli.commands.items():
        hints = typing.get_type_hints(command.callback)
        for p in command.params:
            assert p.name is not None
            annotated = hints.get(p.name, writer.get(p.name))
            assert annotated == _python_type(p), f"{name} {p.name}: {annotated} vs {p.type}"
        takes = inspect.signature(command.callback).parameters  # type: ignore[arg-type]
        assert {p.name for p in command.params} >= {k for k in takes if k != "scan"}


def _invoke(*args: str) -> tuple[object, str, str]:
    result = CliRunner().invoke(cli.cli, list(args), standalone_mode=False, catch_exceptions=True)
    return (result.exception or result.return_value), result.stdout, result.stderr


def test_a_passing_example_is_exit_0_with_the_report_on_stdout() -> None:
    code, out, err = _invoke("check", str(EXAMPLES / "honest"), "--no-cache")
    assert code == 0 and "PASS" in out.upper() and err == ""


def test_a_disguised_copy_is_exit_1() -> None:
    code, out, _ = _invoke("check", str(EXAMPLES / "homegrown"), "--no-cache", "-f", "json")
    assert code == 1 and '"PG502"' in out


def test_a_report_typo_is_refused_before_any_check_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from gate import checks

    def never(*a: object, **k: object) -> None:
        raise AssertionError("the check ran")

    monkeypatch.setattr(checks, "check", never)
    code, _, _ = _invoke("check", str(EXAMPLES / "honest"), "--report", "sarf:out.sarif")
    assert isinstance(code, click.BadParameter) and "FORMAT:PATH" in str(code)
    assert cli.main(["check", str(EXAMPLES / "honest"), "--report", "json"]) == 2


def test_cache_dir_reaches_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real = cli._settings

    def spy(cache_dir: str | None, offline: bool = False, verbose: bool = False) -> object:
        got = real(cache_dir, offline, verbose)
        seen.append(got)
        return got

    monkeypatch.setattr(cli, "_settings", spy)
    code, _, _ = _invoke("check", str(EXAMPLES / "honest"), "--cache-dir", str(tmp_path))
    assert code == 0 and [s.cache_dir for s in seen] == [str(tmp_path)]  # type: ignore[attr-defined]
    assert list(tmp_path.iterdir())  # the stat cache was written there
