"""Lineage cost on a pair of large models, side by side with reading them and the naive approach.

    python bench/lineage_perf.py [--size-gb 2] [--dir /tmp/provenance-gate-lineage-bench]

Generates three Llama-shaped bf16 models of about --size-gb each (Gaussian weights, with a
config.json transformers can load): a base, a fine-tune-like derivative (base + 10% noise) and an
independent model. With the page cache warm, it measures in one run:
  1. reading both models' files once (the floor any weight-based check pays);
  2. `provenance-gate lineage derived -r base` and `lineage independent -r base`: wall time and
     peak RSS (GNU time);
  3. the naive approach: load both models with transformers, compare every parameter and the
     logits on a fixed prompt.
With --cold (root only: it writes /proc/sys/vm/drop_caches), the read and both lineage runs
are also measured from a dropped page cache, which is what a CI runner sees.
Ratios of one run are what to compare; absolute times on a shared machine are noise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

# the hashing benchmark's layout and measuring helpers, loaded by path (bench/ is no package)
_spec = importlib.util.spec_from_file_location("hash_bench", Path(__file__).with_name("bench.py"))
assert _spec is not None
assert _spec.loader is not None
_hash_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_hash_bench)
GATE, llama_layout, run = _hash_bench.GATE, _hash_bench.llama_layout, _hash_bench.run

NAIVE = """
import sys, torch
from transformers import AutoModelForCausalLM
a = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
b = AutoModelForCausalLM.from_pretrained(sys.argv[2], dtype=torch.bfloat16)
pb = dict(b.named_parameters())
cos = [torch.nn.functional.cosine_similarity(p.float().flatten(), pb[n].float().flatten(), dim=0)
       for n, p in a.named_parameters()]
ids = torch.arange(1, 33).unsqueeze(0)
with torch.no_grad():
    la, lb = a(input_ids=ids).logits.float(), b(input_ids=ids).logits.float()
print(float(torch.stack(cos).mean()), float(torch.nn.functional.cosine_similarity(
    la.flatten(), lb.flatten(), dim=0)))
"""


def config(layout: list[tuple[str, tuple[int, ...]]]) -> dict[str, object]:
    shapes = dict(layout)
    vocab, hidden = shapes["model.embed_tokens.weight"]
    inter = shapes["model.layers.0.mlp.up_proj.weight"][0]
    layers = sum(1 for n, _ in layout if n.endswith("q_proj.weight"))
    heads = max(1, hidden // 128)
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": heads, "vocab_size": vocab, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }  # fmt: skip


def generate(root: Path, size_bytes: int) -> dict[str, Path]:
    """base, derived (base + 10% noise) and independent, one safetensors file per tensor group."""
    layout = llama_layout(size_bytes)
    out = {k: root / k for k in ("base", "derived", "independent")}
    if all((p / "config.json").is_file() for p in out.values()):
        return out
    rng = {"base": np.random.default_rng(1), "noise": np.random.default_rng(2),
           "independent": np.random.default_rng(3)}  # fmt: skip
    for p in out.values():
        p.mkdir(parents=True, exist_ok=True)
        (p / "config.json").write_text(json.dumps(config(layout)))
    shard: dict[str, dict[str, np.ndarray]] = {k: {} for k in out}
    n_shard, used = 1, 0

    def flush() -> None:
        for k, tensors in shard.items():
            save_file(tensors, str(out[k] / f"model-{n_shard:05d}.safetensors"),
                      metadata={"format": "pt"})  # fmt: skip
            tensors.clear()

    for name, shape in layout:
        if name.endswith("norm.weight"):
            base = 1.0 + 0.1 * rng["base"].standard_normal(shape, dtype=np.float32)
            ind = 1.0 + 0.1 * rng["independent"].standard_normal(shape, dtype=np.float32)
        else:
            base = 0.02 * rng["base"].standard_normal(shape, dtype=np.float32)
            ind = 0.02 * rng["independent"].standard_normal(shape, dtype=np.float32)
        noise = 0.002 * rng["noise"].standard_normal(shape, dtype=np.float32)
        shard["base"][name] = base.astype(ml_dtypes.bfloat16)
        shard["derived"][name] = (base + noise).astype(ml_dtypes.bfloat16)
        shard["independent"][name] = ind.astype(ml_dtypes.bfloat16)
        used += 2 * base.size
        if used > 512 << 20:
            flush()
            n_shard, used = n_shard + 1, 0
    flush()
    return out


def read_all(folders: list[Path]) -> float:
    buf = bytearray(8 << 20)
    t = time.perf_counter()
    for folder in folders:
        for f in sorted(folder.glob("*.safetensors")):
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass
    return time.perf_counter() - t


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/provenance-gate-lineage-bench"))
    ap.add_argument("--no-naive", action="store_true", help="skip the transformers baseline")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--cold", action="store_true", help="also measure from a dropped page cache")
    args = ap.parse_args()
    models = generate(args.dir / f"{args.size_gb:g}gb", int(args.size_gb * (1 << 30)))
    size = sum(f.stat().st_size for f in models["base"].glob("*.safetensors"))
    read_all(list(models.values()))  # warm the page cache
    read = read_all([models["derived"], models["base"]])
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    result: dict[str, object] = {"model_gb": round(size / 1e9, 2), "read_both_s": round(read, 2)}
    for kind in ("derived", "independent"):
        out = subprocess.run([GATE, "lineage", str(models[kind]), "-r", str(models["base"])],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        wall, rss = run([GATE, "lineage", str(models[kind]), "-r", str(models["base"])], env)
        result[f"lineage_{kind}_s"] = round(wall, 2)
        result[f"lineage_{kind}_rss_mb"] = rss
        result[f"lineage_{kind}_vs_read"] = round(wall / read, 2)
        result[f"lineage_{kind}_verdict"] = out.splitlines()[1].split(":", 1)[1].strip()
    if args.cold:
        drop_caches()
        cold = read_all([models["derived"], models["base"]])
        result["cold_read_both_s"] = round(cold, 2)
        for kind in ("derived", "independent"):
            drop_caches()
            wall, rss = run([GATE, "lineage", str(models[kind]), "-r", str(models["base"])], env)
            result[f"cold_lineage_{kind}_s"] = round(wall, 2)
            result[f"cold_lineage_{kind}_vs_read"] = round(wall / cold, 2)
    if not args.no_naive:
        read_all([models["derived"], models["base"]])  # warm, like the warm lineage runs
        naive = [sys.executable, "-c", NAIVE, str(models["base"]), str(models["derived"])]
        wall, rss = run(naive, env)
        result["naive_transformers_s"] = round(wall, 2)
        result["naive_transformers_rss_mb"] = rss
        result["lineage_vs_naive_time"] = round(float(result["lineage_derived_s"]) / wall, 3)  # type: ignore[arg-type]
    for k, v in result.items():
        print(f"{k}: {v}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
