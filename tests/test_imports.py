"""What each command path imports: a check imports numpy, scipy, gguf or ml_dtypes only when a
weight tier runs, ml_dtypes only for bf16/fp8 tensors, and huggingface_hub only for a Hub model.
(Importing them costs about a second before a byte is read; a warm check of an unchanged
repository should cost about what `--version` does.) Each path runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import HEAD, artifact_yaml, manifest, raw_st, tensors, write_st

HEAVY = ("numpy", "scipy", "gguf", "ml_dtypes", "huggingface_hub", "torch", "transformers")
# Runs the command line in-process, then writes the heavy top-level modules it imported.
_RUN = """
import atexit, json, sys
from gate.cli import main
heavy, out = json.loads(sys.argv[1]), sys.argv[2]
atexit.register(lambda: open(out, "w").write(json.dumps(
    sorted({m.split(".")[0] for m in sys.modules} & set(heavy)))))
sys.argv = ["provenance-gate", *sys.argv[3:]]
main()
"""


def _imported(tmp_path: Path, *args: str) -> list[str]:
    out = tmp_path / "imported.json"
    env = {**os.environ, "PROVENANCE_GATE_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", _RUN, json.dumps(HEAVY), str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode in (0, 1), done.stderr
    imported: list[str] = json.loads(out.read_text())
    return imported


def _bf16(path: Path, data: dict[str, np.ndarray]) -> None:
    """A safetensors file of bf16 tensors (the upper half of each float32), written by hand."""
    header: dict[str, object] = {}
    blobs, at = [], 0
    for name, value in sorted(data.items()):
        blob = (value.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {
            "dtype": "BF16",
            "shape": list(value.shape),
            "data_offsets": [at, at + len(blob)],
        }
        blobs.append(blob)
        at += len(blob)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw_st(header, b"".join(blobs)))


def _derived(root: Path, dtype: str = "float32") -> Path:
    """A fine-tune of a local base folder (float32, float16 or bfloat16 weights)."""
    base = tensors(seed=1)
    child = {k: v + np.float32(0.01) for k, v in base.items()}
    if dtype == "bfloat16":
        _bf16(root / "base" / "model.safetensors", base)
        _bf16(root / "model.safetensors", child)
    else:
        write_st(root / "base" / "model.safetensors", {k: v.astype(dtype) for k, v in base.items()})
        write_st(root / "model.safetensors", {k: v.astype(dtype) for k, v in child.items()})
    head = HEAD.replace("origin: scratch", "origin: derived")
    bases = "base_models:\n  - path: base\n    relation: finetune\n    license: apache-2.0\n"
    manifest(root, head + bases + artifact_yaml(root, "model.safetensors"))
    return root


def test_version_imports_nothing_heavy(tmp_path: Path) -> None:
    assert _imported(tmp_path, "--version") == []


def test_a_check_without_lineage_claims_imports_no_weight_library(tmp_path: Path) -> None:
    root = tmp_path / "m"
    write_st(root / "model.safetensors")
    manifest(root, HEAD + artifact_yaml(root, "model.safetensors"))  # scratch, no references
    assert _imported(tmp_path, "check", str(root)) == []
    assert _imported(tmp_path, "lock", str(root)) == []


def test_the_exact_tier_alone_imports_no_weight_library(tmp_path: Path) -> None:
    root = _derived(tmp_path / "m")
    assert _imported(tmp_path, "check", str(root), "--lineage-depth", "exact") == []


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_the_weight_tiers_import_what_they_use(tmp_path: Path, dtype: str) -> None:
    pytest.importorskip("scipy")
    root = _derived(tmp_path / "m", dtype)
    imported = _imported(tmp_path, "check", str(root))
    assert "numpy" in imported and "gguf" in imported  # gguf-py's tensor name tables
    assert "ml_dtypes" not in imported  # bf16 widens by a shift; only fp8 needs it
    assert "huggingface_hub" not in imported and "torch" not in imported


def test_a_warm_check_reuses_the_lineage_verdict(tmp_path: Path) -> None:
    """Unchanged repository and base: the verdict comes from the cache, no weight library is
    imported, and the report is the same; a changed base computes afresh."""
    pytest.importorskip("scipy")
    root = _derived(tmp_path / "m")
    report = tmp_path / "r.json"
    assert "numpy" in _imported(tmp_path, "check", str(root), "--report", f"json:{report}")
    cold = json.loads(report.read_text())
    assert _imported(tmp_path, "check", str(root), "--report", f"json:{report}") == []
    assert json.loads(report.read_text())["findings"] == cold["findings"]
    write_st(root / "base" / "model.safetensors", tensors(seed=2))  # an unrelated base now
    assert "numpy" in _imported(tmp_path, "check", str(root), "--report", f"json:{report}")
    assert "PG506" in [f["rule"] for f in json.loads(report.read_text())["findings"]]
    assert "PG506" not in [f["rule"] for f in cold["findings"]]  # independent of the new base
