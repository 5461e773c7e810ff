"""Lineage accuracy on the test zoo: every derived and independent pair, one confusion matrix.

    python bench/lineage_accuracy.py [--zoo DIR] [--llama 4] [--gpt2 2] [--json out.json]
    python bench/lineage_accuracy.py --calibrate   # also rewrite gate/lineage/calibration.json

Positives: each zoo model against its true base (merges: against all their parents), in every
format the zoo stores (safetensors, GGUF, ONNX, GPTQ, AWQ, NF4, MLX, torch: one row each);
every cross-format pair: each llama base in every format against each other form of it, and
against each form of another base (cross_format); the sibling pairs (siblings); and the
architecture zoo (tests/zoo/archs.py: BERT, RoBERTa, T5, ViT, Whisper, Qwen2, Gemma, Phi,
Mixtral), one row per family and per relation, with its own negatives across seeds and across
architectures (architectures).
Negatives: each zoo model against every base of its family it was not made from (same
architecture, same data, other seed: the hardest negatives there are). Prints the confusion
matrix of relations, TPR at the default alpha and the FPR observed on the negatives (with its 95%
upper bound), p-value calibration on the negatives (the fraction below each level must not
exceed the level), merge-coefficient error and layer-map accuracy.

--calibrate first measures the matching test's null hit rate on the negatives' rows (see
gate/lineage/calibration.py) and writes it, with the false-positive bound, into the package.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gate.lineage import calibration, stats  # noqa: E402
from gate.lineage.models import iter_float, open_model  # noqa: E402
from gate.lineage.relation import _TOKEN_AXIS, compare  # noqa: E402
from tests.zoo import archs, build  # noqa: E402

EXPECTED = {"base": "copy"}  # the truth's `relation` -> the relation the gate should name
CALIBRATION = ROOT / "gate" / "lineage" / "calibration.json"


def pairs(truth: dict[str, Any]) -> tuple[list[tuple[str, list[str]]], list[tuple[str, str]]]:
    """(model, true parents) positives and (model, unrelated base) negatives."""
    bases = {n for n, t in truth.items() if t["relation"] == "base"}
    positives, negatives = [], []
    for name, t in sorted(truth.items()):
        parents = t.get("parents") or [t["base"]]
        positives.append((name, parents))
        for b in sorted(bases):
            if truth[b]["family"] == t["family"] and b not in parents and b != t["base"]:
                negatives.append((name, b))
    return positives, negatives


def null_rows(root: Path, negatives: list[tuple[str, str]]) -> tuple[int, int]:
    """Rows tested and rows whose best |cosine| reached HIT_COSINE, over the negatives, in
    every orientation and with the residual rotation the matching test would use."""
    import numpy as np

    tested = hits = 0
    for name, base in negatives:
        c, r = open_model(str(root / name)), open_model(str(root / base))
        if c.adapter is not None:
            continue
        cm = {(t.role, t.layer): t for t in iter_float(c)}
        ce = next((t for t in c.tensors.values() if t.role == "token_embd.weight"), None)
        re_ = next((t for t in r.tensors.values() if t.role == "token_embd.weight"), None)
        q = None
        if ce is not None and re_ is not None and ce.shape == re_.shape:
            q = stats.procrustes((r.array(re_).T @ c.array(ce)).astype(np.float64))
        for t in iter_float(r):
            u = cm.get((t.role, t.layer))
            if u is None or len(u.shape) != 2 or t.role in _TOKEN_AXIS:
                continue
            cc, rr = c.array(u), r.array(t)
            variants = []
            if cc.shape[1] == rr.shape[1] >= stats.MIN_MATCH_DIM:
                variants.append((cc, rr))
                if q is not None and rr.shape[1] == q.shape[0]:
                    variants.append((cc, rr @ q))
            if cc.shape[0] == rr.shape[0] >= stats.MIN_MATCH_DIM:
                variants.append((cc.T, rr.T))
                if q is not None and rr.shape[0] == q.shape[0]:
                    variants.append((cc.T, (q.T @ rr).T))
            for a, b in variants:
                sims = np.abs(stats._unit_rows(b) @ stats._unit_rows(a).T)
                best = sims.max(axis=1)
                tested += len(best)
                hits += int((best >= calibration.HIT_COSINE).sum())
        c.close()
        r.close()
    return tested, hits


def upper95(k: int, n: int) -> float:
    """One-sided 95% upper confidence bound of a binomial rate (Clopper-Pearson)."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(0.95, k + 1, n - k))


def model_format(root: Path, name: str, t: dict[str, Any]) -> str:
    """How a zoo model is stored: its truth's `format` (ONNX, 4-bit packings), else GGUF or
    safetensors by its files (an adapter is safetensors too)."""
    if "format" in t:
        return str(t["format"])
    return "gguf" if (root / name / "model.gguf").exists() else "safetensors"


def by_format(rows: list[dict[str, Any]], negatives: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-format rows: positives named right, negatives called dependent."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        row = out.setdefault(r["format"], {"positives": 0, "right": 0, "negatives": 0, "fp": 0})
        row["positives"] += 1
        row["right"] += r["expected"] == r["found"]
    for n in negatives:
        row = out.setdefault(n["format"], {"positives": 0, "right": 0, "negatives": 0, "fp": 0})
        row["negatives"] += 1
        row["fp"] += n["dependent"]
    return dict(sorted(out.items()))


def run(root: Path, alpha: float) -> dict[str, Any]:
    truth = build.truth(root)
    positives, negatives = pairs(truth)
    confusion: Counter[tuple[str, str]] = Counter()
    rows = []
    t0 = time.perf_counter()
    tp = 0
    for name, parents in positives:
        rep = compare(open_model(str(root / name), name),
                      [open_model(str(root / p), p) for p in parents], alpha)  # fmt: skip
        t = truth[name]
        expected = EXPECTED.get(t["relation"], t["relation"])
        got = rep.verdicts[0].relation
        confusion[(expected, got)] += 1
        detected = all(v.dependent or v.relation == "adapter" for v in rep.verdicts)
        tp += detected
        rows.append({"model": name, "expected": expected, "found": got, "detected": detected,
                     "format": model_format(root, name, t),
                     "details": _recovered(t, rep)})  # fmt: skip
    neg_p: list[float] = []
    neg_rows: list[dict[str, Any]] = []
    fp = 0
    for name, base in negatives:
        rep = compare(open_model(str(root / name), name), [open_model(str(root / base), base)],
                      alpha)  # fmt: skip
        v = rep.verdicts[0]
        confusion[("independent", v.relation)] += 1
        fp += v.dependent
        neg_rows.append({"format": model_format(root, name, truth[name]), "dependent": v.dependent})
        if v.log10_p is not None:
            neg_p.append(10**v.log10_p)
    elapsed = time.perf_counter() - t0
    n_neg = len(negatives)
    merges = [
        r["details"]["coefficient_error"] for r in rows if "coefficient_error" in r["details"]
    ]
    maps = [r["details"]["layer_map_correct"] for r in rows if "layer_map_correct" in r["details"]]
    return {
        "zoo": str(root),
        "alpha": alpha,
        "positives": len(positives),
        "negatives": n_neg,
        "true_positive_rate": tp / len(positives),  # at the FPR below (target: <= 1%)
        "false_positives": fp,
        "false_positive_rate": fp / n_neg if n_neg else None,
        "false_positive_upper95": upper95(fp, n_neg) if n_neg else None,
        "relation_accuracy": sum(v for (e, g), v in confusion.items() if e == g)
        / (len(positives) + n_neg),
        "confusion": {f"{e} -> {g}": v for (e, g), v in sorted(confusion.items())},
        "calibration": {
            str(level): sum(p <= level for p in neg_p) / max(len(neg_p), 1)
            for level in (0.5, 0.1, 0.05, 0.01, 1e-3)
        },
        "merge_coefficient_max_error": max(merges) if merges else None,
        "layer_maps_correct": f"{sum(maps)}/{len(maps)}",
        "formats": by_format(rows, neg_rows),
        "cross_format": cross_format(root, alpha),
        "siblings": siblings(root, alpha),
        "architectures": architectures(root, alpha),
        "seconds": round(elapsed, 1),
        "rows": rows,
    }


def cross_format(root: Path, alpha: float) -> dict[str, Any]:
    """Every llama base in every format the zoo publishes it in (build.CROSS_FORMATS), each
    form against each other form of the same base (positives: `copy` or `quantized`), and each
    form against each form of another base (negatives, the base pair rotating over the
    combinations). One row per candidate format."""
    import itertools

    truth = build.truth(root)
    bases = sorted(
        n for n, t in truth.items() if t["relation"] == "base" and t["family"] == "llama"
    )
    opened: dict[str, Any] = {}

    def m(name: str) -> Any:
        return opened.setdefault(name, open_model(str(root / name), name))

    rows: dict[str, dict[str, int]] = {}

    def row(fmt: str) -> dict[str, int]:
        empty = {"pairs": 0, "right": 0, "negatives": 0, "fp": 0}
        return rows.setdefault(fmt or "safetensors", empty)

    wrong = []
    for base in bases:
        for a, b in itertools.permutations(build.CROSS_FORMATS, 2):
            v = compare(m(base + a), [m(base + b)], alpha).verdicts[0]
            expected = build.cross_expected(truth, base + a, base + b)
            row(a)["pairs"] += 1
            row(a)["right"] += v.relation == expected
            if v.relation != expected:
                wrong.append(f"{base + a} vs {base + b}: {v.relation}, expected {expected}")
    others = list(itertools.permutations(bases, 2))
    combos = list(itertools.product(build.CROSS_FORMATS, repeat=2))
    for k, (a, b) in enumerate(combos):
        x, y = others[k % len(others)]
        v = compare(m(x + a), [m(y + b)], alpha).verdicts[0]
        row(a)["negatives"] += 1
        row(a)["fp"] += v.dependent
    total = {k: sum(r[k] for r in rows.values()) for k in ("pairs", "right", "negatives", "fp")}
    return {**total, "by_candidate_format": rows, "wrong": wrong}


def siblings(root: Path, alpha: float) -> dict[str, Any]:
    """Every zoo pair that shares an ancestor and derives not from each other (truth:
    `sibling_of`), both ways round: named `sibling`, never a derivation, never independent."""
    truth = build.truth(root)
    rows: dict[str, dict[str, int]] = {}
    for name, t in sorted(truth.items()):
        other = t.get("sibling_of")
        if other is None:
            continue
        v = compare(open_model(str(root / name), name), [open_model(str(root / other), other)],
                    alpha).verdicts[0]  # fmt: skip
        kind = name.rsplit(".", 1)[1].rsplit("-", 1)[0]  # sib-layers, sib-vocab, cpt
        row = rows.setdefault(kind, {"pairs": 0, "sibling": 0, "derivation": 0, "independent": 0})
        row["pairs"] += 1
        row["sibling" if v.relation == "sibling" else "derivation" if v.dependent
            else "independent"] += 1  # fmt: skip
    return rows


def architectures(root: Path, alpha: float) -> dict[str, Any]:
    """The architecture zoo (tests/zoo/archs.py): each model against its base, one row per
    family and per relation; negatives: each model against the other seed's base of its
    family, against the first base of every other family and against the main zoo's first
    Llama and GPT-2 bases (cross-architecture pairs share roles and shapes where the families
    do: Qwen2/Gemma/Mixtral attention, BERT/RoBERTa throughout, and the Llamas)."""
    zoo = archs.ensure()
    truth = archs.truth(zoo)
    opened: dict[str, Any] = {}

    def m(name: str) -> Any:
        folder = zoo / name if name in truth else root / name
        return opened.setdefault(name, open_model(str(folder), name))

    def verdict(a: str, b: str) -> Any:
        return compare(m(a), [m(b)], alpha).verdicts[0]

    families: dict[str, dict[str, int]] = {}
    relations: dict[str, dict[str, int]] = {}
    confusion: Counter[str] = Counter()
    wrong, fp, negatives, inconclusive = [], 0, 0, 0
    firsts = sorted(n for n, t in truth.items() if t["relation"] == "base" and n.endswith("-s0"))
    for name, t in sorted(truth.items()):
        fam = families.setdefault(t["family"], {"positives": 0, "right": 0, "negatives": 0,
                                                "fp": 0})  # fmt: skip
        if name != t["base"]:  # a base against itself tests nothing: bases are negatives only
            expected = EXPECTED.get(t["relation"], t["relation"])
            got = verdict(name, t["base"]).relation
            confusion[f"{expected} -> {got}"] += 1
            rel = relations.setdefault(expected, {"pairs": 0, "right": 0})
            fam["positives"] += 1
            rel["pairs"] += 1
            fam["right"] += got == expected
            rel["right"] += got == expected
            if got != expected:
                wrong.append(f"{name} vs {t['base']}: {got}, expected {expected}")
        family_bases = [f"{t['family']}-s0", f"{t['family']}-s1"]
        others = [b for b in family_bases if b != t["base"]]
        others += [b for b in firsts if truth[b]["family"] != t["family"]]
        others += ["llama-s0", "gpt2-s0"]
        for other in others:
            v = verdict(name, other)
            confusion[f"independent -> {v.relation}"] += 1
            negatives += 1
            inconclusive += v.relation == "inconclusive"  # no tensor in common to compare
            fam["negatives"] += 1
            fam["fp"] += v.dependent
            fp += v.dependent
            if v.dependent:
                wrong.append(f"{name} vs {other}: {v.relation}, expected independent")
    for model in opened.values():
        model.close()
    return {
        "families": families,
        "relations": relations,
        "confusion": dict(sorted(confusion.items())),
        "negatives": negatives,
        "inconclusive": inconclusive,
        "false_positives": fp,
        # over the pairs that had something to compare
        "false_positive_upper95": upper95(fp, negatives - inconclusive),
        "wrong": wrong,
    }


def _recovered(t: dict[str, Any], rep: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    v = rep.verdicts[0]
    merge = v.details.get("merge")
    if merge and t.get("method") == "linear":
        out["coefficient_error"] = max(
            abs(a - b) for a, b in zip(merge["mean_coefficients"], t["weights"], strict=True)
        )
    if merge and t.get("method") == "slerp":
        out["coefficient_error"] = abs(merge.get("slerp_t", math.inf) - t["t"])
    if t["relation"] == "pruned" and "layer_map" in t:
        out["layer_map_correct"] = (
            v.details.get("layer_map") == list(range(len(t["layer_map"])))
            or [x for x in v.details.get("layer_map", []) if x is not None] == t["layer_map"]
        )
    if t.get("method") == "passthrough":
        mine = sorted(i for i, (src, _) in enumerate(t["layer_map"]) if src == t["base"])
        out["layer_map_correct"] = v.details.get("layers_taken_unchanged") == mine
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", type=Path, help="zoo folder (default: the test suite's cache)")
    ap.add_argument("--llama", type=int, default=4)
    ap.add_argument("--gpt2", type=int, default=2)
    ap.add_argument("--alpha", type=float, default=1e-3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--calibrate", action="store_true")
    args = ap.parse_args()
    root = build.ensure(args.zoo, args.llama, args.gpt2)
    if args.calibrate:
        _, negatives = pairs(build.truth(root))
        tested, hits = null_rows(root, negatives)
        table = dict(calibration.TABLE)
        table.update({
            "null_hit_rate": float(f"{upper95(hits, tested):.3g}"),
            "rows_tested": tested,
            "rows_hit": hits,
            "source": f"bench/lineage_accuracy.py --calibrate on zoo {build.key()}"
            f" ({args.llama} llama + {args.gpt2} gpt2 bases, {len(negatives)} negative pairs)",
        })  # fmt: skip
        CALIBRATION.write_text(json.dumps(table, indent=1) + "\n")
        print(f"null rows: {hits} of {tested} hit |cos| >= {calibration.HIT_COSINE};"
              f" rate bound {table['null_hit_rate']} written to {CALIBRATION}")  # fmt: skip
    result = run(root, args.alpha)
    if args.calibrate:
        table = json.loads(CALIBRATION.read_text())
        n, k = result["negatives"], result["false_positives"]
        table["false_positive_bound"] = (
            f"{k}/{n} independent pairs of the test zoo called"
            f" dependent (95% upper bound {upper95(k, n):.2%})"
        )
        CALIBRATION.write_text(json.dumps(table, indent=1) + "\n")
    for k, v in result.items():
        if k not in ("rows", "confusion", "formats", "cross_format", "siblings", "architectures"):
            print(f"{k}: {v}")
    print("per format: positives named right, negatives called dependent")
    for fmt, row in result["formats"].items():
        print(f"  {fmt:12} {row['right']:3d}/{row['positives']:<3d} right"
              f"   {row['fp']}/{row['negatives']} false positives")  # fmt: skip
    cross = result["cross_format"]
    print(f"cross-format (each base in every format, each against each): {cross['right']}/"
          f"{cross['pairs']} right, {cross['fp']}/{cross['negatives']} negatives"
          " dependent")  # fmt: skip
    for fmt, row in cross["by_candidate_format"].items():
        print(f"  {fmt:12} {row['right']:3d}/{row['pairs']:<3d} right"
              f"   {row['fp']}/{row['negatives']} false positives")  # fmt: skip
    for line in cross["wrong"]:
        print(f"  mislabelled: {line}")
    print("siblings (shared ancestor, neither derived from the other), both ways round:")
    for kind, row in result["siblings"].items():
        print(f"  {kind:12} {row['sibling']}/{row['pairs']} sibling, {row['derivation']} called"
              f" a derivation, {row['independent']} independent")  # fmt: skip
    arch = result["architectures"]
    print("architectures (each model against its base; negatives: other seed, other families,"
          " the main zoo's Llama and GPT-2):")  # fmt: skip
    for fam, row in arch["families"].items():
        print(f"  {fam:12} {row['right']:3d}/{row['positives']:<3d} right"
              f"   {row['fp']}/{row['negatives']} false positives")  # fmt: skip
    for rel, row in arch["relations"].items():
        print(f"  {rel:12} {row['right']:3d}/{row['pairs']:<3d} right")
    compared = arch["negatives"] - arch["inconclusive"]
    print(f"  negatives: {arch['false_positives']}/{arch['negatives']} dependent ({compared}"
          f" compared: 95% upper bound {arch['false_positive_upper95']:.2%};"
          f" {arch['inconclusive']} inconclusive, no tensor in common)")  # fmt: skip
    for k, v in arch["confusion"].items():
        print(f"  {k}: {v}")
    for line in arch["wrong"]:
        print(f"  mislabelled: {line}")
    print("confusion (expected -> found):")
    for k, v in result["confusion"].items():
        print(f"  {k}: {v}")
    wrong = [r for r in result["rows"] if r["expected"] != r["found"]]
    for r in wrong:
        print(f"  mislabelled: {r['model']}: expected {r['expected']}, found {r['found']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
