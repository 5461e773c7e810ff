"""Builders shared by the tests: tiny checkpoints, raw safetensors bytes, LFS pointers, repos."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from gate import checks, hubclient
from gate.findings import Report
from gate.scanner import Scanner


def tensors(seed: int = 0, layers: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {"embed.weight": rng.standard_normal((16, 8)).astype(np.float32)}
    for n in range(layers):
        out[f"layers.{n}.w"] = rng.standard_normal((8, 8)).astype(np.float32)
        out[f"layers.{n}.norm"] = np.ones(8, np.float32)
        out[f"layers.{n}.bias"] = np.zeros(8, np.float32)
    return out


def write_st(path: Path, data: dict[str, np.ndarray] | None = None, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(data if data is not None else tensors(seed), str(path))
    return path


def raw_st(header: dict[str, Any] | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    """A safetensors file with an arbitrary (possibly lying) header."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(h) if length is None else length
    return struct.pack("<Q", n) + h + data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pointer(content: bytes) -> bytes:
    return (
        "version https://git-lfs.github.com/spec/v1\n"
        f"oid sha256:{sha(content)}\nsize {len(content)}\n"
    ).encode()


def manifest(root: Path, body: str) -> Path:
    path = root / "provenance.yaml"
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return path


def artifact_yaml(root: Path, *rels: str, tensors_digest: bool = True) -> str:
    """YAML lines declaring files with their true size and sha256."""
    from gate import hashing

    lines = ["artifacts:"]
    for rel in rels:
        scan = hashing.scan(str(root / rel))
        lines += [f"  - path: {rel}", f"    size: {scan.size}", f"    sha256: {scan.sha256}"]
        if tensors_digest and scan.tensors_digest:
            lines.append(f"    tensors_digest: {scan.tensors_digest}")
    return "\n".join(lines) + "\n"


HEAD = """\
version: 1
model:
  name: demo
  license: apache-2.0
  origin: scratch
"""


def repo(root: Path, *rels: str, extra: str = "") -> Path:
    """A repository whose manifest truthfully declares rels (which must exist)."""
    manifest(root, HEAD + artifact_yaml(root, *rels) + extra)
    return root


def check(root: Path, **kw: Any) -> Report:
    return check_target(checks.Target.resolve(str(root), None), **kw)


def check_target(
    target: checks.Target, *, scanner: Scanner | None = None, offline: bool = False, **options: Any
) -> Report:
    """`check` as the command line runs it: options by keyword, the Hub when it is installed."""
    connect = (lambda: hubclient.HubClient(offline=offline)) if hubclient.available() else None
    return checks.check(target, checks.Options(**options), scanner, connect)


def rules_of(report: Report, severity: str | None = None) -> list[str]:
    return sorted(f.rule for f in report.findings if severity is None or f.severity == severity)


def errors(report: Report) -> list[str]:
    return rules_of(report, "error")


def write_gguf(
    path: Path,
    data: dict[str, np.ndarray] | None = None,
    quantize: str | None = None,
    **metadata: str,
) -> Path:
    """A real GGUF file written by the reference writer (the `gguf` package); quantize: a
    ggml type name the matrices are quantized to by gguf-py's quantizer (vectors stay F32)."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), arch="llama")
    for key, value in metadata.items():
        w.add_string(key, value)
    arrays = data if data is not None else {"w": np.arange(64, dtype=np.float32).reshape(2, 32)}
    qtype = None if quantize is None else gguf.GGMLQuantizationType[quantize]
    for name, array in arrays.items():
        if qtype is not None and array.ndim == 2:
            w.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


SCRIPT = Path(sys.executable).parent / "provenance-gate"


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    full_env.update(env or {})
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
