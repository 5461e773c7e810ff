"""Reference packs and `identify`: accuracy on the zoo, pack size, and lookup cost vs index size.

    python bench/identify.py [--zoo DIR] [--size-gb 2] [--packs 10,100,1000] [--json out.json]

accuracy: a pack of every zoo base in one index; every zoo model identified against it. The true
base (for a merge: one of its parents) must rank first with p <= alpha; every other pack compared
is a negative (0 dependent expected; the 95% upper bound of the rate is stated). A second index
without the llama-s0 and gpt2-s0 packs: every model made from those alone must get "no known
base", never a wrong base.
size: a synthetic Llama-shaped bf16 model of --size-gb (and a fine-tune of it: base + noise),
fingerprinted; the pack's bytes as a fraction of the model's, and the time.
scaling: the fine-tune identified against indexes of 10, 100 and 1,000 packs: its base's pack,
synthetic packs of small random models of varied widths and vocabularies, and one unrelated pack
of the candidate's own shapes per 100 (same architecture, other weights; these pass the
pre-filter and are compared). Wall time and the packs opened, per index size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gate.lineage import identify, index, pack, sampled  # noqa: E402
from gate.scanner import Scanner  # noqa: E402
from tests.zoo import build  # noqa: E402

EXPECTED = {"base": "copy"}
# Documented limits (docs/identify.md), which must never be given a wrong base: a sample compares
# rows at the same index and a residual-stream rotation moves every row, so a rotated copy needs
# the whole base; an unmerged adapter holds no base weights at all.
LIMITS = {"rotated", "all-attacks", "lora-adapter"}


def upper95(k: int, n: int) -> float:
    """One-sided 95% upper bound of a binomial rate (exact for k = 0: 1 - 0.05^(1/n))."""
    if n == 0:
        return 1.0
    if k == 0:
        return 1.0 - 0.05 ** (1.0 / n)
    p = k / n
    return min(1.0, p + 1.645 * math.sqrt(p * (1 - p) / n) + 1.0 / n)


def make_index(root: Path, bases: list[str], folder: str, scanner: Scanner) -> None:
    os.makedirs(folder, exist_ok=True)
    packs = []
    for b in bases:
        out = os.path.join(folder, f"{b}{pack.SUFFIX}")
        if not os.path.exists(out):
            pack.fingerprint(str(root / b), out, scanner=scanner, name=b)
        packs.append(out)
    index.add(os.path.join(folder, "index"), packs)


def accuracy(root: Path, alpha: float, work: str) -> dict[str, Any]:
    truth = build.truth(root)
    bases = sorted(n for n, t in truth.items() if t["relation"] == "base")
    scanner = Scanner()
    make_index(root, bases, os.path.join(work, "all"), scanner)
    held_out = {"llama-s0", "gpt2-s0"}
    make_index(root, [b for b in bases if b not in held_out], os.path.join(work, "part"), scanner)
    full, part = os.path.join(work, "all", "index"), os.path.join(work, "part", "index")
    t0 = time.perf_counter()
    rows, negatives, false_pos, confusion = [], 0, 0, {}
    misses = []
    for name in sorted(truth):
        t = truth[name]
        parents = set(t.get("parents") or [t["base"]])
        got = identify.identify(str(root / name), [full], scanner, alpha)
        top = got.bases[0] if got.bases else None
        right = top is not None and top.name in parents
        kind = name.split(".", 1)[1] if "." in name else "base"
        expected = EXPECTED.get(t["relation"], t["relation"])
        found = top.verdict.relation if top else "no known base"
        key = f"{expected} -> {found}"
        confusion[key] = confusion.get(key, 0) + 1
        wrong = [m.name for m in got.bases if m.name not in parents and m.name != t["base"]]
        compared = [m for m in (*got.bases, *got.others) if m.name not in parents]
        negatives += len([m for m in compared if m.name != t["base"]])
        false_pos += len(wrong)
        if not right:
            misses.append({"model": name, "found": top.name if top else None, "kind": kind})
        rows.append({"model": name, "right": right, "expected": expected, "found": found,
                     "shortlisted": got.shortlisted, "seconds": round(got.seconds, 3)})  # fmt: skip
    no_base = []
    for name in sorted(truth):
        t = truth[name]
        parents = set(t.get("parents") or [t["base"]])
        if not parents <= held_out:
            continue
        got = identify.identify(str(root / name), [part], scanner, alpha)
        no_base.append({"model": name, "said": [m.name for m in got.bases]})
    right = [r for r in rows if r["right"]]
    limited = [m for m in misses if m["kind"] in LIMITS]
    return {
        "models": len(rows),
        "top1_right": len(right),
        "misses": misses,
        "misses_outside_documented_limits": len(misses) - len(limited),
        "negatives_compared": negatives,
        "false_positives": false_pos,
        "false_positive_upper95": upper95(false_pos, negatives),
        "confusion": dict(sorted(confusion.items())),
        "held_out_models": len(no_base),
        "held_out_no_known_base": sum(not r["said"] for r in no_base),
        "held_out_wrong": [r for r in no_base if r["said"]],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def synthetic_model(folder: str, *, hidden: int, inter: int, vocab: int, layers: int,
                    seed: int, like: str | None = None, noise: float = 0.0) -> str:  # fmt: skip
    """A Llama-shaped bf16 model of Gaussian weights, written tensor by tensor (bounded memory);
    like: a model to perturb instead (a fine-tune: + noise x its scale)."""
    import numpy as np

    os.makedirs(folder, exist_ok=True)
    names = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        names += [(p + f"self_attn.{n}_proj.weight", (hidden, hidden)) for n in "qkvo"]
        names += [(p + "mlp.gate_proj.weight", (inter, hidden)), (p + "mlp.up_proj.weight",
                  (inter, hidden)), (p + "mlp.down_proj.weight", (hidden, inter)),
                  (p + "input_layernorm.weight", (hidden,))]  # fmt: skip
    names += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    config = {"model_type": "llama", "hidden_size": hidden, "intermediate_size": inter,
              "num_hidden_layers": layers, "vocab_size": vocab}  # fmt: skip
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    rng = np.random.default_rng(seed)
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in names:
        n = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    src = open(os.path.join(like, "model.safetensors"), "rb") if like else None  # noqa: SIM115
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        if src is not None:
            src.seek(8 + len(raw))
        for _, shape in names:
            rows = shape[0] if len(shape) == 2 else 1
            width = math.prod(shape) // rows
            for start in range(0, rows, 4096):
                k = min(4096, rows - start)
                if src is not None:
                    bits = np.frombuffer(src.read(2 * k * width), dtype=np.uint16)
                    x = (bits.astype(np.uint32) << 16).view(np.float32)
                    x = x + noise * 0.02 * rng.standard_normal(x.shape, dtype=np.float32)
                else:
                    x = 0.02 * rng.standard_normal(k * width, dtype=np.float32)
                f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    if src is not None:
        src.close()
    _vocab(folder, vocab, seed if like is None else -1)
    return folder


def small_model(folder: str, *, hidden: int, inter: int, vocab: int, seed: int) -> str:
    """A two-layer model of the tests' family writer, with a vocabulary of its own."""
    from tests.hubserver import llama_family

    out = llama_family(folder, hidden=hidden, inter=inter, vocab=vocab, layers=2, seed=seed,
                       kinds=("base",))["base"]  # fmt: skip
    _vocab(out, vocab, seed)
    return out


def _vocab(folder: str, vocab: int, seed: int) -> None:
    """A vocab.json of `vocab` tokens (seed -1: the one every model of the base shares)."""
    prefix = "t" if seed == -1 else f"s{seed}_"
    tokens = {f"{prefix}{i}": i for i in range(vocab)}
    if seed == -1 or not os.path.exists(os.path.join(folder, "vocab.json")):
        with open(os.path.join(folder, "vocab.json"), "w") as f:
            json.dump(tokens, f)


def size_and_scaling(size_gb: float, counts: list[int], alpha: float, work: str) -> dict[str, Any]:
    hidden, inter, vocab = 2048, 5632, 32000
    per_layer = 2 * (4 * hidden * hidden + 3 * hidden * inter + hidden)
    layers = max(2, round((size_gb * 1e9 - 4 * vocab * hidden) / per_layer))
    if size_gb < 0.5:  # the tests' small run: a narrower model
        hidden, inter, vocab = 512, 1408, 8000
        per_layer = 2 * (4 * hidden * hidden + 3 * hidden * inter + hidden)
        layers = max(2, round((size_gb * 1e9 - 4 * vocab * hidden) / per_layer))
    dims = {"hidden": hidden, "inter": inter, "vocab": vocab, "layers": layers}
    t = time.perf_counter()
    base = synthetic_model(os.path.join(work, "big-base"), seed=1, **dims)
    _vocab(base, vocab, -1)
    tuned = synthetic_model(os.path.join(work, "big-ft"), seed=2, like=base, noise=0.3, **dims)
    made = time.perf_counter() - t
    model_bytes = os.path.getsize(os.path.join(base, "model.safetensors"))
    scanner = Scanner()
    t = time.perf_counter()
    base_pack = os.path.join(work, f"big-base{pack.SUFFIX}")
    pack.fingerprint(base, base_pack, scanner=scanner, name="big-base")
    fp_seconds = time.perf_counter() - t
    pack_bytes = os.path.getsize(base_pack)
    # synthetic packs: small models of varied shapes, and 1 per 100 of the candidate's shapes
    pool = os.path.join(work, "pool")
    os.makedirs(pool, exist_ok=True)
    widths = [64, 96, 128, 160, 192, 256, 320, 384, 448, 512, 640, 768]
    packs: list[str] = []
    for i in range(max(counts) - 1):
        out = os.path.join(pool, f"p{i}{pack.SUFFIX}")
        if i % 100 == 99:
            _same_shapes(base_pack, out, i)
        else:
            h = widths[i % len(widths)] + (0 if i % len(widths) else 32 * (i // len(widths) % 4))
            folder = small_model(
                os.path.join(pool, f"m{i}"),
                hidden=h,
                inter=2 * h + 8 * (i % 7),
                vocab=256 + 16 * (i % 50),
                seed=1000 + i,
            )
            pack.fingerprint(folder, out, scanner=scanner, name=f"synthetic-{i}")
        packs.append(out)
    curve = []
    for n in counts:
        folder = os.path.join(work, f"index-{n}")
        index.add(folder, [base_pack, *packs[: n - 1]])
        identify.identify(tuned, [folder], scanner, alpha)  # warm: the page cache
        t = time.perf_counter()
        got = identify.identify(tuned, [folder], scanner, alpha)  # hashes the candidate again
        top = got.bases[0] if got.bases else None
        curve.append(
            {
                "packs": n,
                "shortlisted": got.shortlisted,
                "seconds": round(time.perf_counter() - t, 3),
                "top": top.name if top else None,
                "relation": top.verdict.relation if top else None,
            }
        )
    return {
        "model": {**dims, "bytes": model_bytes, "seconds_to_write": round(made, 1)},
        "pack": {
            "bytes": pack_bytes,
            "fraction": pack_bytes / model_bytes,
            "fingerprint_seconds": round(fp_seconds, 2),
            "target": f"<= {sampled.FRACTION:.1%} and <= {sampled.MAX_BYTES >> 20} MB",
        },
        "scaling": curve,
        "growth": round(curve[-1]["seconds"] / curve[0]["seconds"], 2) if curve else None,
        "index_growth": counts[-1] / counts[0] if counts else None,
    }


def _same_shapes(base_pack: str, out: str, seed: int) -> None:
    """An unrelated model of the base's architecture: the base pack's rows replaced by
    Gaussian values of the same scale, other file digests."""
    import hashlib

    import numpy as np

    got = pack.read(base_pack)
    rng = np.random.default_rng(seed)
    tensors = []
    with open(base_pack, "rb") as f:
        f.seek(got.header.data_start)
        for t in got.header.tensors:
            n = math.prod(t.shape)
            x = 0.02 * rng.standard_normal(n, dtype=np.float32)
            data = (
                (x.view(np.uint32) >> 16).astype(np.uint16).tobytes()
                if t.dtype == "BF16"
                else x.tobytes()
            )
            tensors.append((t.name, "BF16" if t.dtype == "BF16" else "F32", list(t.shape), data))
    doc = json.loads(json.dumps(got.doc))
    fake = [hashlib.sha256(f"{seed}:{f['path']}".encode()).hexdigest() for f in doc["files"]]
    for f, sha in zip(doc["files"], fake, strict=True):
        f["sha256"] = sha
    doc["signature"]["files"] = sorted(fake)
    doc["name"] = f"same-shapes-{seed}"
    doc.pop("provenance")
    doc["provenance"] = {"source": "synthetic", "commit": None, "tool": "provenance-gate",
                         "tool_version": "bench", "content_digest": pack.content_digest(
                             doc, b"".join(t[3] for t in tensors))}  # fmt: skip
    pack.write(out, tensors, doc)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--zoo", type=Path, help="zoo folder (default: build or reuse the cached zoo)")
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--packs", default="10,100,1000")
    ap.add_argument("--alpha", type=float, default=1e-3)
    ap.add_argument("--skip-zoo", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    counts = [int(x) for x in args.packs.split(",") if x]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pg-identify-bench-") as work:
        if not args.skip_zoo:
            root = args.zoo or build.ensure()
            out["accuracy"] = accuracy(root, args.alpha, work)
        out["size"] = size_and_scaling(args.size_gb, counts, args.alpha, work)
    text = json.dumps(out, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
