"""The benchmark script keeps working (a tiny run; its timings are not asserted: see bench/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the benchmarks, end to end

ROOT = Path(__file__).parent.parent
# A benchmark measures the gate, and its code paths are the unit tests' to cover: it runs
# without the coverage tracer that `pytest --cov` puts on every child process (the accuracy
# benchmark took 300 s traced, 145 s not)
UNTRACED = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}


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
        env=UNTRACED,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert set(doc["results"]) - {"model_signing hash (default)"} == {
        "gate lock (cold, no cache)",
        "openssl dgst -sha256, parallel",
        "coreutils sha256sum",
        "python hashlib sha256 only",
        "gate check (cold, no cache)",
        "gate check (warm cache)",
        "gate check, local base (warm)",
        "gate --version",
    }
    assert all(v["wall_s"] > 0 and v["peak_rss_mb"] > 0 for v in doc["results"].values())
    assert "cold lock throughput / parallel openssl" in r.stdout
    assert "cold check throughput / parallel openssl" in r.stdout
    assert not (tmp_path / "b").exists()  # cleaned up


def test_lineage_perf_runs_end_to_end(tmp_path: Path) -> None:
    """The lineage benchmark on a tiny pair (timings not asserted: only that it runs and
    reaches the right verdicts, the naive transformers baseline included)."""
    out = tmp_path / "perf.json"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "lineage_perf.py"),
            "--size-gb",
            "0.02",
            "--dir",
            str(tmp_path / "m"),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=UNTRACED,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(out.read_text())
    assert result["lineage_derived_verdict"].startswith("finetune of ")
    assert result["lineage_independent_verdict"] == "independent of every reference"
    assert result["naive_transformers_s"] > 0


def test_lineage_accuracy_on_the_zoo(tmp_path: Path) -> None:
    """The accuracy benchmark's figures are a regression test: every derived pair is found,
    no unrelated pair is convicted, merges and layer maps are recovered."""
    out = tmp_path / "acc.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "lineage_accuracy.py"), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
        env=UNTRACED,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(out.read_text())
    assert result["negatives"] >= 300
    assert result["true_positive_rate"] == 1.0
    assert result["false_positives"] == 0
    assert result["merge_coefficient_max_error"] < 0.02
    assert result["layer_maps_correct"] == "20/20"
    wrong = [row for row in result["rows"] if row["expected"] != row["found"]]
    assert wrong == []
    cross = result["cross_format"]
    assert cross["right"] == cross["pairs"] > 0 and cross["fp"] == 0, cross["wrong"]
    siblings = result["siblings"]
    for kind in ("sib-layers", "sib-vocab"):  # continued pre-training: docs/lineage.md
        assert siblings[kind]["sibling"] == siblings[kind]["pairs"] > 0, siblings
    assert all(row["independent"] == 0 for row in siblings.values())
    arch = result["architectures"]  # every family, every relation, across architectures
    assert len(arch["families"]) == 9 and arch["wrong"] == []
    assert all(row["right"] == row["positives"] > 0 for row in arch["families"].values())
    assert arch["negatives"] - arch["inconclusive"] >= 500 and arch["false_positives"] == 0


def test_identify_bench_on_the_zoo(tmp_path: Path, zoo: Path) -> None:
    """Identification against an index of every zoo base: the true base first for every model
    outside the documented limits, no wrong base over the compared negatives, "no known base"
    when the base is held out; a small pack-size and scaling run (timings not asserted)."""
    out = tmp_path / "identify.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "identify.py"), "--zoo", str(zoo),
         "--size-gb", "0.05", "--packs", "5,20", "--json", str(out)],
        capture_output=True, text=True, timeout=1200, env=UNTRACED, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    acc = doc["accuracy"]
    assert acc["models"] == 210 and acc["misses_outside_documented_limits"] == 0, acc["misses"]
    assert acc["false_positives"] == 0 and acc["negatives_compared"] >= 500
    assert acc["held_out_models"] > 0 and acc["held_out_wrong"] == []
    assert acc["held_out_no_known_base"] == acc["held_out_models"]
    scaling = doc["size"]["scaling"]
    assert [(s["top"], s["relation"]) for s in scaling] == [("big-base", "finetune")] * 2
    assert doc["size"]["pack"]["bytes"] > 0


def test_audit_bench_runs_on_every_executor(tmp_path: Path, zoo: Path) -> None:
    """A few zoo models on one thread, two processes and a two-worker Dask LocalCluster: every
    executor audits them all and finds the same bases (throughput is the bench's to measure)."""
    out = tmp_path / "audit.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "audit.py"), "--zoo", str(zoo), "--models", "8",
         "--configs", "thread:1,process:2,dask:2", "--json", str(out)],
        capture_output=True, text=True, timeout=900, env=UNTRACED, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["models"] == 8 and doc["same_results"] is True
    assert all(c["errors"] == 0 for c in doc["configs"].values())
