from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_examples_are_reproducible(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "make_examples.py"), str(tmp_path)],
        check=True,
        cwd=ROOT,
    )
    for name in ("homegrown", "honest"):
        cmp = filecmp.dircmp(tmp_path / name, ROOT / "examples" / name)
        stack = [cmp]
        while stack:
            c = stack.pop()
            assert (c.left_only, c.right_only) == ([], []), c.left
            _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
            assert (mismatch, errors) == ([], []), c.left
            stack.extend(c.subdirs.values())


def test_examples_stay_small() -> None:
    size = sum(p.stat().st_size for p in (ROOT / "examples").rglob("*") if p.is_file())
    assert size < 400_000


def test_repository_schemas_are_the_shipped_schemas() -> None:
    shipped = sorted(p.name for p in (ROOT / "gate" / "schemas").glob("*.json"))
    assert shipped == sorted(p.name for p in (ROOT / "schemas").glob("*.json"))
    for name in shipped:
        assert (ROOT / "schemas" / name).read_bytes() == (
            ROOT / "gate" / "schemas" / name
        ).read_bytes(), name
