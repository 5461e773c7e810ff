"""The long fuzz run keeps working (a short run here; the long run's command is in the README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the fuzz runner, in a subprocess

ROOT = Path(__file__).parent.parent


def test_fuzz_script_short_run() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz.py"), "--examples", "60"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [row["target"] for row in rows] == [
        "safetensors header",
        "gguf header",
        "lfs pointer",
        "manifest loader",
        "pickle scanner",
        "zip layout",
        "tar listing",
        "npy header",
        "onnx structure",
        "torch zip tensor table",
        "every loader (polyglots)",
        "lineage engine",
        "reference pack",
        "pack index",
        "model signature",
    ]
    assert all(row["crashes"] == 0 and row["inputs"] > 0 for row in rows)
    assert r.stdout.splitlines()[-1].endswith("inputs, 0 crash(es)")
