"""The index bundled with the gate: real public models shipped inside PyPI packages (Silero VAD,
PaddleOCR through RapidOCR), reproducible from the pinned package files, and identified in the
other forms those packages ship them in (ONNX re-exports of the same weights, a release of
other weights)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gate.lineage import identify, index
from gate.scanner import Scanner

ROOT = Path(__file__).resolve().parents[2]
SILERO_SAME = ("silero_vad.onnx", "silero_vad_16k_op15.onnx", "silero_vad_16k_sequence.onnx",
               "silero_vad_openvino_16k.onnx", "silero_vad_op18_ifless.onnx")  # fmt: skip


def data(package: str, sub: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.origin, f"{package}: installed by .ci/run (--no-deps)"
    return Path(spec.origin).parent / sub


def test_the_bundled_index_is_sound_and_names_its_sources() -> None:
    bundled = index.load(index.bundled())
    assert index.verify(bundled) == []
    assert {e.name for e in bundled.entries} == {
        "silero-vad-16k", "silero-vad-16k-op15", "pp-ocrv4-det", "pp-ocrv4-rec",
        "pp-ocr-mobile-v2-cls"}  # fmt: skip
    assert all(e.source.startswith("pypi:") for e in bundled.entries)
    assert sum(e.size for e in bundled.entries) < 5 << 20  # kept small: it ships in the wheel


def test_the_bundled_index_is_rebuilt_identically_from_the_pinned_files() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "index" / "bundled.py"), "--check"],
                       capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", SILERO_SAME)
def test_silero_exports_of_the_same_weights_are_copies(name: str) -> None:
    """Other opsets, an inlined `If` graph, OpenVINO's export: one set of weights under other
    tensor names; the safetensors release holds other weights (|cos| 0.90 per kernel), related."""
    got = identify.identify(str(data("silero_vad", "data") / name), [index.bundled()], Scanner())
    top = got.bases[0]
    assert (top.name, top.verdict.relation) == ("silero-vad-16k-op15", "copy")
    assert {m.name for m in got.bases} == {"silero-vad-16k-op15", "silero-vad-16k"}
    assert all(m.verdict.p_value is not None and m.verdict.p_value <= 1e-3 for m in got.bases)


def test_a_silero_release_of_other_weights_has_no_known_base() -> None:
    """silero_vad_half.onnx: its kernels agree with neither pack (|cos| 0.03); only the STFT
    basis (a formula) is shared, which once made it a 'copy'."""
    got = identify.identify(str(data("silero_vad", "data") / "silero_vad_half.onnx"),
                            [index.bundled()], Scanner())  # fmt: skip
    assert not got.found and got.shortlisted == 2


@pytest.mark.parametrize(
    ("file", "pack"),
    [("ch_PP-OCRv4_det_infer.onnx", "pp-ocrv4-det"), ("ch_PP-OCRv4_rec_infer.onnx", "pp-ocrv4-rec"),
     ("ch_ppocr_mobile_v2.0_cls_infer.onnx", "pp-ocr-mobile-v2-cls")],
)  # fmt: skip
def test_each_ocr_model_is_its_own_pack_and_no_other(file: str, pack: str) -> None:
    got = identify.identify(str(data("rapidocr_onnxruntime", "models") / file), [index.bundled()],
                            Scanner())  # fmt: skip
    assert [(m.name, m.verdict.relation) for m in got.bases] == [(pack, "copy")]


def test_a_zoo_like_model_has_no_known_base(tmp_path: Path) -> None:
    from tests.hubserver import llama_family

    fam = llama_family(str(tmp_path), hidden=128, inter=352, vocab=1024, layers=2, kinds=("base",))
    got = identify.identify(fam["base"], [index.bundled()], Scanner())
    assert not got.found and got.packs == 5
    assert os.path.isdir(index.bundled())
