"""The benchmark script keeps working (a tiny run; its timings are not asserted: see bench/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench.py"),
            "--size-gb",
            "0.02",
            "--repeat",
            "1",
            "--dir",
            str(tmp_path / "b"),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert set(doc["results"]) == {
        "gate lock (cold, no cache)",
        "openssl dgst -sha256, parallel",
        "coreutils sha256sum",
        "python hashlib sha256 only",
        "gate check (cold, no cache)",
        "gate check (warm cache)",
        "gate --version",
    }
    assert all(v["wall_s"] > 0 and v["peak_rss_mb"] > 0 for v in doc["results"].values())
    assert "cold lock throughput / parallel openssl" in r.stdout
    assert not (tmp_path / "b").exists()  # cleaned up
