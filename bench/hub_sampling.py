"""Lineage against a Hub base without downloading it: bytes fetched and time, side by side.

    python bench/hub_sampling.py [--size-gb 2] [--dir /tmp/provenance-gate-lineage-bench]

Uses the models of bench/lineage_perf.py (a Llama-shaped bf16 base of about --size-gb in 512 MB
shards, a fine-tune-like derivative and an independent model) and serves the base and the
independent model from a Range-capable Hub stand-in on loopback (tests/hubserver.py). Measures,
in one run:
  1. downloading the whole base from that server (what a download-first check pays at least);
  2. `lineage derived -r BASE_FOLDER`: every tier on the local base (the page cache warm);
  3. `lineage derived -r hf://acme/base@SHA` with empty caches: the sampled path; the server
     counts the bytes it sends, so the fraction is measured, not self-reported;
  4. the same again with the caches of run 3 (nothing is fetched);
  5. `lineage independent -r hf://…`: the verdict and bytes for an unrelated model.
Loopback is far faster than any real network: on a real link the download in (1) grows with
the base's size while (3) grows with the number of range requests (about 4 per sampled matrix).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # the repository, not bench/ (its bench.py would shadow the package)
from bench import lineage_perf as _perf  # noqa: E402 - bench/ is a namespace package
from tests import hubserver  # noqa: E402 - the stand-in the tests use

GATE, run, generate = _perf.GATE, _perf.run, _perf.generate


def download(endpoint: str, repo: str, sha: str, folder: Path) -> float:
    start = time.perf_counter()
    for f in sorted(folder.glob("*.safetensors")):
        url = f"{endpoint}/{repo}/resolve/{sha}/{f.name}"
        with urllib.request.urlopen(url) as resp:
            while resp.read(8 << 20):
                pass
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/provenance-gate-lineage-bench"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    models = generate(args.dir / f"{args.size_gb:g}gb", int(args.size_gb * (1 << 30)))
    size = sum(f.stat().st_size for f in models["base"].glob("*.safetensors"))
    server = hubserver.RangeHub()
    sha = server.add("acme/base", str(models["base"]))
    other = server.add("acme/other", str(models["independent"]))
    shards = len(list(models["base"].glob("*.safetensors")))
    result: dict[str, object] = {"base_gb": round(size / 1e9, 2), "base_shards": shards}
    result["download_whole_base_s"] = round(download(server.endpoint, "acme/base", sha,
                                                     models["base"]), 2)  # fmt: skip
    server.sent["acme/base"] = 0
    base_env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "HF_ENDPOINT": server.endpoint}
    wall, rss = run([GATE, "lineage", str(models["derived"]), "-r", str(models["base"])], base_env)
    result["local_full_s"], result["local_full_rss_mb"] = round(wall, 2), rss
    with tempfile.TemporaryDirectory() as tmp:
        env = {**base_env, "HF_HOME": f"{tmp}/hf", "PROVENANCE_GATE_CACHE_DIR": f"{tmp}/gate"}
        uri = f"hf://acme/base@{sha}"
        cmd = [GATE, "lineage", str(models["derived"]), "-r", uri, "-f", "json"]
        requests = len(server.requests)
        wall, rss = run(cmd, env)
        result["hub_sampled_s"], result["hub_sampled_rss_mb"] = round(wall, 2), rss
        result["hub_sampled_bytes"] = server.sent["acme/base"]
        result["hub_sampled_fraction_pct"] = round(100 * server.sent["acme/base"] / size, 3)
        result["hub_sampled_requests"] = len(server.requests) - requests
        report = json.loads(subprocess.run(cmd, env={**os.environ, **env}, capture_output=True,
                                           text=True, check=True).stdout)  # fmt: skip
        (v,) = report["references"]
        result["hub_sampled_verdict"] = f"{v['relation']} (log10 p {v['log10_p']:.0f})"
        result["hub_sampled_note"] = v["notes"][-1]
        sent, requests = server.sent["acme/base"], len(server.requests)
        wall, _ = run(cmd, env)
        result["hub_cached_s"] = round(wall, 2)
        result["hub_cached_bytes"] = server.sent["acme/base"] - sent
        result["hub_cached_requests"] = len(server.requests) - requests
        cmd = [GATE, "lineage", str(models["derived"]), "-r", f"hf://acme/other@{other}", "-f",
               "json"]  # fmt: skip
        report = json.loads(subprocess.run(cmd, env={**os.environ, **env}, capture_output=True,
                                           text=True, check=True).stdout)  # fmt: skip
        result["hub_independent_verdict"] = report["references"][0]["relation"]
        result["hub_independent_fraction_pct"] = round(100 * server.sent["acme/other"] / size, 3)
    server.close()
    result["sampled_vs_local_full_time"] = round(
        float(result["hub_sampled_s"]) / float(result["local_full_s"]),
        2,  # type: ignore[arg-type]
    )
    for k, val in result.items():
        print(f"{k}: {val}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
