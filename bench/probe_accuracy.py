"""The logit probe on the tiny model zoo: its figures per relation, its calibration, its cost.

    python bench/probe_accuracy.py [--calibrate] [--json FILE]

Every zoo model transformers can load from safetensors (copies, fine-tunes, merges, pruned,
permuted, rotated …; not GGUF, LLM.int8() or unmerged adapters) runs the probe set once. Then:
  * null: each model against every base of its architecture it does not descend from (the
    independent pairs; same tokenizer, same corpus, other seeds). --calibrate writes their
    centred cosines to gate/lineage/probe_calibration.json, the table p-values come from;
  * false positives: each null pair's p-value against the table without that pair's two bases
    (leave-one-base-pair-out), at alpha 0.01;
  * positives: each derivative against its true base(s): figures and p per relation, next to the
    weight tiers' verdict on the same pair, and where the two disagree;
  * cost: probe seconds and the weight tiers' seconds on the same pairs, and, via GNU time,
    wall time and peak RSS of `lineage` with and without --probe on one zoo pair and (with
    --large) on the 2 GB pair of bench/lineage_perf.py (given the zoo's tokenizer: the probe
    needs one, and token ids of a small vocabulary are valid in a large embedding).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # the repository, not bench/ (its bench.py would shadow the package)
from bench import lineage_perf as _perf  # noqa: E402 - bench/ is a namespace package
from gate.lineage import probe  # noqa: E402
from gate.lineage.models import open_model  # noqa: E402
from gate.lineage.relation import compare as weights_compare  # noqa: E402
from tests.zoo import build  # noqa: E402

ALPHA = 0.01
# what transformers cannot run here: GGUF, LLM.int8 without CUDA, a bare adapter, and the
# formats zoo (ONNX; GPTQ/AWQ need GPU kernel packages; NF4 needs CUDA; MLX is not transformers')
UNLOADABLE = (".gguf-q8_0", ".gguf-q4_0", ".int8", ".lora-adapter", ".onnx-ft", ".gptq", ".awq",
              ".nf4", ".mlx", ".onnx", ".onnx-fp16", ".onnx-anon", ".onnx-int8", ".onnx-int8-pc",
              ".onnx-nbits4")  # fmt: skip


def _index(folder: Path) -> None:
    """The shard index transformers needs to load a sharded folder."""
    from safetensors import safe_open

    weight_map = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), "np") as f:
            weight_map.update(dict.fromkeys(f.keys(), shard.name))
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    index = {"metadata": {"total_size": size}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def zoo_digest(zoo: Path, bases: list[str]) -> str:
    """Which zoo a table was computed from: the zoo trains differently on other CPUs (float
    rounding in training), so the test compares exactly only on the same zoo."""
    h = hashlib.sha256()
    for b in bases:
        h.update(b.encode() + b"\0" + (zoo / b / "model.safetensors").read_bytes())
    return h.hexdigest()[:16]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibrate", action="store_true", help="rewrite probe_calibration.json")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quiet", action="store_true", help="print nothing (with --json)")
    ap.add_argument("--large", action="store_true", help="also time the 2 GB pair")
    args = ap.parse_args()
    zoo = build.ensure(None, 4, 2)
    truth = build.truth(zoo)
    names = sorted(n for n in truth if not n.endswith(UNLOADABLE))
    bases = sorted(n for n, t in truth.items() if t["relation"] == "base")
    outs, cost, refused = {}, {}, {}
    for n in list(names):
        t0 = time.perf_counter()
        try:
            outs[n] = probe.outputs(str(zoo / n))
        except probe.ProbeError as e:  # e.g. renamed tensors: transformers would invent weights
            refused[n] = str(e)
            names.remove(n)
            continue
        cost[n] = time.perf_counter() - t0

    def ancestors(n: str) -> set[str]:
        t = truth[n]
        return set(t.get("parents") or [t["base"]])

    null_pairs = [
        (n, b)
        for n in names
        for b in bases
        if truth[b]["family"] == truth[n]["family"] and b not in ancestors(n)
    ]
    null = {(n, b): probe.compare(outs[n], outs[b], b, ALPHA) for n, b in null_pairs}
    table: dict[str, Any] = {
        "probe_version": probe.prompts()[0],
        "source": f"bench/probe_accuracy.py on the test zoo ({len(null_pairs)} independent pairs:"
        " every loadable zoo model against each base of its architecture it does not descend"
        " from; same tokenizer and corpus, other seeds)",
        "null": {},
        "zoo": zoo_digest(zoo, bases),
    }
    for fam in sorted({truth[b]["family"] for b in bases}):
        values = sorted(r.cosine for (n, _), r in null.items() if truth[n]["family"] == fam)
        table["null"][fam] = {"cosine": [round(v, 6) for v in values]}
    # false positives, leave-one-base-pair-out: a pair never calibrates its own p-value
    fp = 0
    for (n, b), r in null.items():
        held = {truth[n]["base"], b}
        same = [(k, r2) for k, r2 in null.items() if truth[k[0]]["family"] == truth[n]["family"]]
        rest = [r2.cosine for (n2, b2), r2 in same if not {truth[n2]["base"], b2} & held]
        if not rest:  # two bases only (gpt2): leave this pair out
            rest = [r2.cosine for k, r2 in same if k != (n, b)]
        p, _ = probe.empirical_p("x", r.cosine, {"null": {"x": {"cosine": rest}}})
        fp += p is not None and p <= ALPHA
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for n in names:
        if truth[n]["relation"] == "base":
            continue
        parents = sorted(ancestors(n))
        r = probe.compare(outs[n], outs[parents[0]], parents[0], ALPHA, table=table)
        t0 = time.perf_counter()
        cand = open_model(str(zoo / n))
        refs = [open_model(str(zoo / p)) for p in parents]
        verdict = weights_compare(cand, refs).verdicts[0]
        weights_s = time.perf_counter() - t0
        rows[truth[n]["relation"] + (" (" + n.split(".", 1)[1] + ")" if "." in n else "")].append({
            "model": n, "cosine": r.cosine, "top1": r.top1, "kl": r.kl, "p": r.p_value,
            "probe_dependent": r.dependent, "weights": verdict.relation,
            "weights_dependent": verdict.dependent,
            "probe_s": round(cost[n] + cost[parents[0]], 3), "weights_s": round(weights_s, 3),
        })  # fmt: skip
    flat = [x for v in rows.values() for x in v]
    result = {
        "not_run": sorted(refused),
        "null_pairs": len(null_pairs),
        "null_cosine": {
            fam: {"max": max(v["cosine"]), "median": statistics.median(v["cosine"])}
            for fam, v in table["null"].items()
        },
        "false_positives_at_0.01": f"{fp}/{len(null_pairs)} (leave-one-base-pair-out)",
        "positives_detected": f"{sum(bool(x['probe_dependent']) for x in flat)}/{len(flat)}",
        "weights_detected": f"{sum(bool(x['weights_dependent']) for x in flat)}/{len(flat)}",
        "disagreements": [
            x["model"] for x in flat if x["probe_dependent"] != x["weights_dependent"]
        ],
        "probe_s_per_pair_median": statistics.median(x["probe_s"] for x in flat),
        "weights_s_per_pair_median": statistics.median(x["weights_s"] for x in flat),
        "per_relation": {
            k: [{kk: x[kk] for kk in ("model", "cosine", "top1", "kl", "p", "weights")} for x in v]
            for k, v in sorted(rows.items())
        },
    }
    if not args.quiet:  # the subprocess timings: skipped when a test only wants the table
        pairs = [("zoo", zoo / "llama-s0.ft-short", zoo / "llama-s0")]
        if args.large:
            big = _perf.generate(Path("/tmp/provenance-gate-lineage-bench/2gb"), 2 << 30)
            for k in ("base", "derived"):
                shutil.copy(zoo / "llama-s0" / "tokenizer.json", big[k] / "tokenizer.json")
                _index(big[k])
            pairs.append(("2gb", big["derived"], big["base"]))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
        for label, cand, ref in pairs:
            base_cmd = [_perf.GATE, "lineage", str(cand), "-r", str(ref)]
            for extra in ([], ["--probe"]):
                wall, rss = _perf.run(base_cmd + extra, env)
                key = f"{label}_{'probe' if extra else 'weights'}"
                result[f"{key}_s"], result[f"{key}_rss_mb"] = round(wall, 2), rss
    result["table"] = table
    if args.calibrate:
        probe.CALIBRATION.write_text(json.dumps(table, indent=1) + "\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.quiet:
        return 0
    for k, v in result.items():
        if k not in ("per_relation", "table"):
            print(f"{k}: {v}")
    for k, v in result["per_relation"].items():  # type: ignore[attr-defined]
        for x in v:
            print(f"  {k:40s} cos {x['cosine']:.4f} top1 {x['top1']:.3f} kl {x['kl']:.3f}"
                  f" p {x['p']} | weights: {x['weights']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
