"""Long differential run: hostile files under the real loaders vs the gate (tests/oracle.py).

    python fuzz/oracle.py [--files 2000] [--seed 0] [--batch 200]

Every fixed candidate, then random mutations of them (byte flips, inserts, deletions,
truncations, splices of opcodes and signatures), are loaded with pickle.load,
torch.load(weights_only=False), numpy.load(allow_pickle=True) and joblib.load in throwaway
processes; each file whose payload ran under any loader must be refused by the gate (an error
naming it) declared under a policy allowing every format, declared under the default policy,
and lying ignored in the repository. Prints one JSON line of counts; exits 1 on any miss (and
writes the missed files next to the report for a regression test).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import oracle  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="mutated files beyond the fixed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--keep", type=Path, default=Path("oracle-misses"))
    args = parser.parse_args()
    rng = random.Random(args.seed)  # noqa: S311 (reproducible mutations, not secrets)
    started = time.perf_counter()
    stats: Counter[str] = Counter()
    by_loader: Counter[str] = Counter()
    misses: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        markers = work / "markers"
        markers.mkdir()
        fixed = list(oracle.candidates(markers))
        pool = fixed + [
            oracle.mutate(rng.choice(fixed), rng, markers, i) for i in range(args.files)
        ]
        for start in range(0, len(pool), args.batch):
            batch = pool[start : start + args.batch]
            files = work / f"b{start}"
            files.mkdir()
            paths = []
            for i, c in enumerate(batch):
                p = files / f"{start + i}-{c.name}"
                p.write_bytes(c.data)
                paths.append((p, c.marker))
            ran, late = oracle.executed(paths, work)
            stats["late markers"] += late
            for (p, _), c in zip(paths, batch, strict=True):
                stats["files"] += 1
                loaders = ran[str(p)]
                by_loader.update(loaders)
                if not loaders:
                    continue
                stats["executed"] += 1
                verdict = oracle.gate_refuses(work / "gate" / p.name, c)
                if all(verdict.values()):
                    stats["refused"] += 1
                    continue
                stats["missed"] += 1
                args.keep.mkdir(exist_ok=True)
                shutil.copy(p, args.keep / p.name)
                misses.append({"file": p.name, "family": c.family, "ran": loaders, **verdict})
            shutil.rmtree(files)
    report = {
        **stats,
        "executed_by_loader": dict(by_loader),
        "seconds": round(time.perf_counter() - started, 1),
        "misses": misses[:20],
    }
    print(json.dumps(report))
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
