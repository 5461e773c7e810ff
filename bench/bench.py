"""Hashing benchmark: provenance-gate against OpenSSL and coreutils on the same files, same run.

    python bench/bench.py [--size-gb 2] [--dir /tmp/provenance-gate-bench] [--repeat 3]

Generates a synthetic multi-shard safetensors model (bf16, Llama-shaped tensors, random bits) with
its index and manifest, warms the page cache, then measures side by side:
  1. `provenance-gate lock --no-cache` (cold) vs `openssl dgst -sha256` over the same files, one
     process per core, vs coreutils `sha256sum`;
  2. a cold `check --no-cache` against the same OpenSSL run (a check computes one SHA-256 per
     byte when no lineage claim needs per-tensor digests);
  3. a warm re-check (stat cache filled, nothing changed) vs the cold check vs `--version`, and
     the same with a local base model declared (the same shards hard-linked into a second
     repository, a small base beside them): its lineage verdict comes from the cache;
  4. the peak RSS of each command (from wait4);
  5. the start-up time of `provenance-gate --version`.
It prints times, throughputs and the ratios the targets are stated in. Timings on a shared
machine are noisy: compare the ratios of one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

SHA_ONLY = """
import hashlib, sys
from concurrent.futures import ThreadPoolExecutor
def digest(path):
    h, buf = hashlib.sha256(), bytearray(1 << 20)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(memoryview(buf)[:n])
    return h.hexdigest()
with ThreadPoolExecutor(int(sys.argv[1])) as pool:
    list(pool.map(digest, sys.argv[2:]))
"""
ENGINE_ONLY = """
import sys, time
from gate.scanner import Scanner
t = time.perf_counter()
Scanner().scan_many(sys.argv[1:])
print(time.perf_counter() - t)
"""
# OpenSSF model signing's hashing (the model digest a model.sig signs), default configuration:
# SHA-256 per file, in parallel. Run with --model-signing-python when it lives in another venv.
MODEL_SIGNING = """
import sys
import model_signing.hashing as h
h.Config().hash(sys.argv[1])
"""
HIDDEN, INTERMEDIATE, VOCAB = 2048, 5632, 32000
SHARD_BYTES = 512 << 20
GATE = str(Path(sys.executable).parent / "provenance-gate")


def llama_layout(size_bytes: int) -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names and shapes of a Llama-style model of about size_bytes in bf16."""
    scale = 8 if size_bytes < 200 << 20 else 1  # small (smoke-test) runs: same shape, smaller
    hidden, inter, vocab = HIDDEN // scale, INTERMEDIATE // scale, VOCAB // scale
    layer = [
        ("self_attn.q_proj.weight", (hidden, hidden)),
        ("self_attn.k_proj.weight", (hidden, hidden)),
        ("self_attn.v_proj.weight", (hidden, hidden)),
        ("self_attn.o_proj.weight", (hidden, hidden)),
        ("mlp.gate_proj.weight", (inter, hidden)),
        ("mlp.up_proj.weight", (inter, hidden)),
        ("mlp.down_proj.weight", (hidden, inter)),
        ("input_layernorm.weight", (hidden,)),
        ("post_attention_layernorm.weight", (hidden,)),
    ]
    per_layer = 2 * sum(int(np.prod(s)) for _, s in layer)
    ends = 2 * 2 * vocab * hidden
    layers = max(1, (size_bytes - ends) // per_layer)
    out = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        out += [(f"model.layers.{i}.{name}", shape) for name, shape in layer]
    out += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    return out


def generate(root: Path, size_bytes: int) -> list[Path]:
    """Write shards, the index and a manifest declaring the shards; returns the shard paths."""
    rng = np.random.default_rng(0)
    shards: list[dict[str, np.ndarray]] = [{}]
    used = 0
    for name, shape in llama_layout(size_bytes):
        n = int(np.prod(shape))
        if used and used + 2 * n > SHARD_BYTES:
            shards.append({})
            used = 0
        shards[-1][name] = np.frombuffer(rng.bytes(2 * n), dtype=ml_dtypes.bfloat16).reshape(shape)
        used += 2 * n
    root.mkdir(parents=True, exist_ok=True)
    paths, weight_map = [], {}
    for i, tensors in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(root / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        paths.append(root / name)
        shards[i - 1] = {}  # free the shard's memory before generating the next one
    index = {
        "metadata": {"total_size": sum(p.stat().st_size for p in paths)},
        "weight_map": weight_map,
    }
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    manifest = [
        "version: 1",
        "model:",
        "  name: bench",
        "  license: apache-2.0",
        "  origin: scratch",
    ]
    manifest += ["artifacts:"] + [f"  - path: {p.name}" for p in paths]
    (root / "provenance.yaml").write_text("\n".join(manifest) + "\n")
    return paths


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall time (s) and peak RSS (MB) of one command and its children, via GNU time.

    (A child forked from this process inherits its RSS high-water mark, so wait4's ru_maxrss
    would report this benchmark's own size; GNU time forks from a small process.)
    """
    with tempfile.NamedTemporaryFile("r") as rss:
        t = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        wall = time.perf_counter() - t
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()}")
        return wall, int(rss.read().split()[-1]) // 1024


def measure(cmd: list[str], env: dict[str, str], repeat: int) -> tuple[float, int]:
    runs = [run(cmd, env) for _ in range(repeat)]
    return statistics.median(w for w, _ in runs), max(r for _, r in runs)


def derived_repo(root: Path, files: list[Path], into: Path) -> Path:
    """A second repository holding the same shards (hard links: no extra disk) that declares a
    fine-tune of a small local base; `lock` fills in the digests."""
    into.mkdir(parents=True)
    for p in [*files, root / "model.safetensors.index.json"]:
        os.link(p, into / p.name)
    rng = np.random.default_rng(1)
    base = {"model.embed_tokens.weight": rng.standard_normal((64, 32)).astype(np.float32)}
    (into / "base").mkdir()
    save_file(base, str(into / "base" / "model.safetensors"))
    lines = (root / "provenance.yaml").read_text().replace("origin: scratch", "origin: derived")
    bases = "base_models:\n  - path: base\n    relation: finetune\n    license: apache-2.0\n"
    head, arts = lines.split("artifacts:\n", 1)
    (into / "provenance.yaml").write_text(head + bases + "artifacts:\n" + arts)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "provenance-gate-bench"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the generated model")
    parser.add_argument(
        "--model-signing-python",
        default=sys.executable,
        help="a Python with `model-signing` (and pyopenssl) installed, to compare its hashing",
    )
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0))
    root: Path = args.dir / "model"
    shutil.rmtree(args.dir, ignore_errors=True)
    files = generate(root, int(args.size_gb * 1e9))
    size = sum(p.stat().st_size for p in files)
    for p in files:  # same warm page cache for every tool
        with open(p, "rb") as f:
            while f.read(64 << 20):
                pass
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PROVENANCE_GATE_CACHE_DIR"] = str(args.dir / "cache")
    run([GATE, "lock", str(root), "--no-cache"], env)  # writes digests; compiles bytecode

    names = [str(p) for p in files]
    xargs = ["xargs", "-P", str(cores), "-n", "1", "openssl", "dgst", "-sha256"]
    results: dict[str, tuple[float, int]] = {}
    results["gate lock (cold, no cache)"] = measure(
        [GATE, "lock", str(root), "--no-cache"], env, args.repeat
    )
    results["openssl dgst -sha256, parallel"] = measure(
        ["sh", "-c", 'printf "%s\\n" "$@" | ' + " ".join(xargs), "sh", *names], env, args.repeat
    )
    results["coreutils sha256sum"] = measure(["sha256sum", *names], env, 1)
    # The floor for any Python tool: SHA-256 alone, one thread per core, 1 MiB reads.
    floor = [sys.executable, "-c", SHA_ONLY, str(cores), *names]
    results["python hashlib sha256 only"] = measure(floor, env, args.repeat)
    engine = [sys.executable, "-c", ENGINE_ONLY, *names]
    engine_s = statistics.median(
        float(subprocess.run(engine, env=env, capture_output=True, text=True, check=True).stdout)
        for _ in range(args.repeat)
    )
    results["gate check (cold, no cache)"] = measure(
        [GATE, "check", str(root), "--no-cache"], env, args.repeat
    )
    signing = [args.model_signing_python, "-c", MODEL_SIGNING, str(root)]
    has_signing = subprocess.run(
        [args.model_signing_python, "-c", "import model_signing.hashing"],
        capture_output=True,
        check=False,
    )
    if has_signing.returncode == 0:
        results["model_signing hash (default)"] = measure(signing, env, args.repeat)
    else:
        print("model_signing: not installed (pip install model-signing pyopenssl), not compared")
    run([GATE, "check", str(root)], env)  # fills the stat cache
    results["gate check (warm cache)"] = measure(
        [GATE, "check", str(root)], env, max(args.repeat, 5)
    )
    derived = derived_repo(root, files, args.dir / "derived")
    run([GATE, "lock", str(derived)], env)
    run([GATE, "check", str(derived)], env)  # the stat cache and the lineage verdict
    results["gate check, local base (warm)"] = measure(
        [GATE, "check", str(derived)], env, max(args.repeat, 5)
    )
    results["gate --version"] = measure([GATE, "--version"], env, 10)

    gb = size / 1e9
    print(f"model: {len(files)} shards, {gb:.2f} GB bf16; {cores} cores; page cache warm")
    print(f"{'command':<34} {'wall s':>8} {'GB/s':>7} {'peak RSS MB':>12}")
    for name, (wall, rss) in results.items():
        rate = f"{gb / wall:7.2f}" if "version" not in name and "warm" not in name else "      -"
        print(f"{name:<34} {wall:8.3f} {rate} {rss:12d}")
    lock, openssl = (
        results["gate lock (cold, no cache)"][0],
        results["openssl dgst -sha256, parallel"][0],
    )
    warm, version = results["gate check (warm cache)"][0], results["gate --version"][0]
    based = results["gate check, local base (warm)"][0]
    cold_check = results["gate check (cold, no cache)"][0]
    ratios = {
        "cold check throughput / parallel openssl": (
            openssl / results["gate check (cold, no cache)"][0]
        ),
        "cold lock throughput / parallel openssl": openssl / lock,
        "cold lock throughput / sha256sum": results["coreutils sha256sum"][0] / lock,
        "hashing engine alone, SHA-256 (check) / parallel openssl": openssl / engine_s,
        "python sha256-only throughput / parallel openssl": (
            openssl / results["python hashlib sha256 only"][0]
        ),
        "warm check - --version (s)": warm - version,
        "warm check, local base - --version (s)": based - version,
        "cold check / warm check": results["gate check (cold, no cache)"][0] / warm,
        "peak RSS of cold lock (MB)": results["gate lock (cold, no cache)"][1],
        "--version (s)": version,
    }
    if "model_signing hash (default)" in results:  # > 1: the check is faster
        signed = results["model_signing hash (default)"][0]
        ratios["model_signing hash time / cold check time"] = signed / cold_check
    targets = {
        "cold check throughput / parallel openssl": ">= 0.9",
        "cold lock throughput / parallel openssl": ">= 0.75",
        "warm check - --version (s)": "<= 0.1",
        "warm check, local base - --version (s)": "<= 0.1",
        "peak RSS of cold lock (MB)": "<= 256",
        "--version (s)": "<= 0.15",
    }
    print()
    for name, value in ratios.items():
        print(f"{name:<42} {value:8.3f}   {targets.get(name, '')}")
    if args.json:
        doc = {
            "size_bytes": size,
            "shards": len(files),
            "cores": cores,
            "results": {k: {"wall_s": w, "peak_rss_mb": r} for k, (w, r) in results.items()},
            "engine_only_s": engine_s,
            "ratios": ratios,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
