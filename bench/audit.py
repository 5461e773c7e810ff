"""`provenance-gate audit` throughput: models per second with 1, 2 and 4 local process workers,
threads, and a Dask LocalCluster on loopback (started here, 2 single-threaded workers).

    python bench/audit.py [--zoo DIR] [--models 60] [--json out.json]

The models are the first N of the zoo (all formats), identified against an index of the zoo's
bases; every configuration audits the same list into its own results file, and the results must
agree (the same bases found). Timings on a shared 2-core machine are noisy: compare the ratios
of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gate import audit  # noqa: E402
from gate.lineage import index, pack  # noqa: E402
from gate.scanner import Scanner  # noqa: E402
from tests.zoo import build  # noqa: E402


def run(root: Path, models: int, configs: list[str], work: str) -> dict[str, Any]:
    truth = build.truth(root)
    bases = sorted(n for n, t in truth.items() if t["relation"] == "base")
    packs = []
    for b in bases:
        packs.append(os.path.join(work, f"{b}{pack.SUFFIX}"))
        pack.fingerprint(str(root / b), packs[-1], scanner=Scanner(), name=b)
    folder = os.path.join(work, "index")
    index.add(folder, packs)
    names = sorted(truth)[:models]
    listed = os.path.join(work, "models.txt")
    Path(listed).write_text("\n".join(str(root / n) for n in names) + "\n")
    jobs = audit.jobs(listed, (folder,), 1e-3, True, None)
    out: dict[str, Any] = {"models": len(jobs), "configs": {}}
    answers: dict[str, dict[str, list[str]]] = {}
    for spec in configs:
        kind, _, n = spec.partition(":")
        cluster = None
        if kind == "dask":
            from distributed import LocalCluster

            cluster = LocalCluster(n_workers=int(n), threads_per_worker=1, host="127.0.0.1",
                                   dashboard_address=None, processes=True)  # fmt: skip
            where = "dask://" + cluster.scheduler_address.removeprefix("tcp://")
        else:
            where = kind
        results = os.path.join(work, f"{spec.replace(':', '-')}.jsonl")
        started = time.perf_counter()
        pool = audit.pool(where, int(n))
        try:
            summary = audit.audit(jobs, results, pool, False, print)
        finally:
            pool.close()
            if cluster is not None:
                cluster.close()
        wall = time.perf_counter() - started  # pool start-up included
        found = {}
        for line in Path(results).read_text().splitlines():
            doc = json.loads(line)
            found[doc["model"]] = [b["name"] for b in doc.get("identify", {}).get("bases", [])]
        answers[spec] = found
        out["configs"][spec] = {"seconds": round(wall, 2), "models_per_second":
                                round(len(jobs) / wall, 2), "errors": summary.errors}  # fmt: skip
    first = next(iter(answers.values()))
    out["same_results"] = all(a == first for a in answers.values())
    one = out["configs"].get("process:1", {}).get("seconds")
    if one:
        out["speedup_vs_1_process"] = {
            k: round(one / v["seconds"], 2) for k, v in out["configs"].items()
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--zoo", type=Path)
    ap.add_argument("--models", type=int, default=60)
    ap.add_argument("--configs", default="process:1,process:2,process:4,thread:2,dask:2")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pg-audit-bench-") as work:
        result = run(args.zoo or build.ensure(), args.models, args.configs.split(","), work)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
