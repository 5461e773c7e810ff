"""Build (or check) the index bundled with the gate: packs of real public models that ship as
files inside packages on PyPI, the one model registry this project's machines can reach.

    pip install --no-deps silero-vad==6.2.3 rapidocr-onnxruntime==1.4.4
    python examples/index/bundled.py            # rewrite gate/data/index
    python examples/index/bundled.py --check    # rebuild in a temporary folder and compare

`--no-deps`: only the packages' data files are read (never imported), so their runtime
dependencies (torchaudio, onnxruntime, opencv) are not needed. Each file's SHA-256 is pinned
below: a package that ships other bytes under the same version is refused. The packs' content
digests are reproducible: `--check` rebuilds them and compares
(tests/lineage/test_bundled_index.py).

Packs of popular Hugging Face Hub bases are built the same way where the Hub is reachable:
`provenance-gate fingerprint hf://owner/name@<commit>` per base, then `provenance-gate index add`;
examples/workflows/provenance-index.yml does it in a scheduled workflow, pinned by commit.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gate.lineage import index, pack  # noqa: E402
from gate.scanner import Scanner  # noqa: E402

BUNDLED = ROOT / "gate" / "data" / "index"

# (pack name, distribution==version, package, path inside it, sha256, license)
SOURCES = (
    ("silero-vad-16k", "silero-vad==6.2.3", "silero_vad", "data/silero_vad_16k.safetensors",
     "c59271c284ae9c8335d795d60e0bfdb71aaaceec578d9bd9ffc1b8153c319ea1", "MIT"),
    ("silero-vad-16k-op15", "silero-vad==6.2.3", "silero_vad", "data/silero_vad_16k_op15.onnx",
     "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49", "MIT"),
    ("pp-ocrv4-det", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime",
     "models/ch_PP-OCRv4_det_infer.onnx",
     "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", "Apache-2.0"),
    ("pp-ocrv4-rec", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime",
     "models/ch_PP-OCRv4_rec_infer.onnx",
     "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", "Apache-2.0"),
    ("pp-ocr-mobile-v2-cls", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime",
     "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
     "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", "Apache-2.0"),
)  # fmt: skip


class SourceMissing(Exception):
    pass


def locate(package: str, rel: str, sha256: str) -> str:
    """The installed file, after checking its pinned SHA-256."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SourceMissing(f"{package} is not installed (pip install --no-deps …, see above)")
    path = os.path.join(os.path.dirname(spec.origin), rel)
    with open(path, "rb") as f:
        got = hashlib.sha256(f.read()).hexdigest()
    if got != sha256:
        raise SourceMissing(f"{path}: sha256 {got}, pinned {sha256}")
    return path


def build(folder: Path) -> list[str]:
    """Every pack into folder/…, then the index; returns the packs' content digests."""
    folder.mkdir(parents=True, exist_ok=True)
    scanner = Scanner()
    packs = []
    for name, dist, package, rel, sha256, _ in SOURCES:
        path = locate(package, rel, sha256)
        out = folder / f"{name}{pack.SUFFIX}"
        pack.fingerprint(
            path, str(out), scanner=scanner, name=name, uri=f"pypi:{dist}/{package}/{rel}"
        )
        packs.append(str(out))
    got, _ = index.add(str(folder), packs)
    return sorted(e.content_digest for e in got.entries)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--check", action="store_true", help="rebuild elsewhere and compare")
    args = ap.parse_args()
    if not args.check:
        for old in BUNDLED.glob(f"*{pack.SUFFIX}"):
            old.unlink()
        (BUNDLED / index.INDEX_FILE).unlink(missing_ok=True)
        digests = build(BUNDLED)
        print(f"wrote {len(digests)} packs to {BUNDLED}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = build(Path(tmp) / "index")
    shipped = sorted(e.content_digest for e in index.load(str(BUNDLED)).entries)
    if fresh != shipped:
        print("the bundled index differs from a fresh build", file=sys.stderr)
        return 1
    print(f"the bundled index matches a fresh build ({len(fresh)} packs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
