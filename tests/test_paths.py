from __future__ import annotations

import os
from pathlib import Path

import pytest

from gate import paths


@pytest.mark.parametrize(
    ("rel", "pattern", "match"),
    [
        ("a.bin", "*.bin", True),
        ("d/a.bin", "*.bin", False),
        ("d/a.bin", "**/*.bin", True),
        ("a.bin", "**/*.bin", True),
        ("ckpt/x/y.pt", "ckpt/**", True),
        ("ckptx/y.pt", "ckpt/**", False),
        ("a1.pt", "a?.pt", True),
        ("a/.pt", "a?.pt", False),
        ("a+b.pt", "a+b.pt", True),
    ],
)
def test_glob(rel: str, pattern: str, match: bool) -> None:
    assert paths.GlobSet([pattern]).match(rel) is match


def test_resolve_inside(tmp_path: Path) -> None:
    root = os.path.realpath(tmp_path)
    assert paths.resolve_inside(root, "a/b.bin") == (os.path.join(root, "a", "b.bin"), None)
    assert paths.resolve_inside(root, "")[1]
    assert paths.resolve_inside(root, "a/\0b")[1] == "the path contains a NUL byte"
    os.symlink("/", tmp_path / "up")
    _real, problem = paths.resolve_inside(root, "up/etc/passwd")
    assert problem
    assert "outside" in problem


def test_walk_skips_git_and_does_not_follow_dir_symlinks(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.bin").write_text("")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.bin").write_text("")
    (tmp_path / "skip").mkdir()
    (tmp_path / "skip" / "b.bin").write_text("")
    os.symlink(tmp_path / "d", tmp_path / "link")
    assert list(paths.walk_files(str(tmp_path), skip=("skip",))) == ["d/a.bin"]


def test_open_regular_refuses_directories(tmp_path: Path) -> None:
    with pytest.raises(paths.NotRegularFile):
        paths.open_regular(str(tmp_path))
