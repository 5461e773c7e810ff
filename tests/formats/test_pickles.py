"""Hostile and benign pickle-family files, built here; nothing may ever run."""

from __future__ import annotations

import io
import os
import pickle
import runpy
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gate.formats import exposure, loaders
from tests.helpers import HEAD, artifact_yaml, check, errors, manifest

torch = pytest.importorskip("torch")  # .ci/run installs torch==2.13.0


class Reduce:
    """An object whose unpickling calls fn(*args): the attack torch.load would execute."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


def payloads(marker: Path) -> dict[str, tuple[Any, str]]:
    touch = f"open({str(marker)!r}, 'w').write('ran')"
    return {
        "os.system": (Reduce(os.system, f"touch {marker}"), "posix.system"),
        "builtins.exec": (Reduce(exec, touch), "builtins.exec"),
        "builtins.eval": (Reduce(eval, touch), "builtins.eval"),
        "subprocess": (Reduce(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
        "runpy": (Reduce(runpy.run_path, str(marker) + ".py"), "runpy.run_path"),
    }


def build(kind: str, obj: Any, path: Path) -> Path:
    if kind == "raw-p0":
        path.write_bytes(pickle.dumps(obj, protocol=0))
    elif kind == "raw-p2":
        path.write_bytes(pickle.dumps(obj, protocol=2))
    elif kind == "raw-p5":
        path.write_bytes(pickle.dumps(obj, protocol=5))
    elif kind == "torch-zip":
        torch.save({"weight": torch.ones(2), "evil": obj}, path)
    elif kind == "torch-legacy":
        torch.save(
            {"weight": torch.ones(2), "evil": obj}, path, _use_new_zipfile_serialization=False
        )
    elif kind == "zip-in-zip":
        inner = io.BytesIO()
        torch.save({"evil": obj}, inner)
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/nested.pt", inner.getvalue())
    elif kind == "numpy-object":
        with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a name
            np.save(f, np.array([obj, 1], dtype=object), allow_pickle=True)
    return path


KINDS = ["raw-p0", "raw-p2", "raw-p5", "torch-zip", "torch-legacy", "zip-in-zip", "numpy-object"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "attack", ["os.system", "builtins.exec", "builtins.eval", "subprocess", "runpy"]
)
def test_hostile_pickles_are_named_and_never_run(tmp_path: Path, kind: str, attack: str) -> None:
    marker = tmp_path / "pwned"
    obj, global_name = payloads(marker)[attack]
    path = build(kind, obj, tmp_path / "model.safetensors")  # renamed: content decides
    result = loaders.scan(str(path), "model.safetensors")
    assert not result.ok
    # Protocols 0-2 use Python 2 spellings: `__builtin__.exec`, `commands.call`.
    spelled = {
        global_name,
        global_name.replace("builtins.", "__builtin__."),
        global_name.replace("subprocess.", "commands."),
    }
    assert spelled & set(result.refused), result
    assert set(result.dangerous) & spelled
    assert not marker.exists()


@pytest.mark.parametrize("name", ["weights.dat", "pytorch_model.bin", "model.safetensors"])
def test_engine_refuses_and_names_the_global(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    build("torch-zip", payloads(marker)["os.system"][0], tmp_path / name)
    manifest(tmp_path, HEAD + artifact_yaml(tmp_path, name))
    report = check(tmp_path)
    (refusal,) = [f for f in report.findings if f.rule == "PG302"]
    assert "posix.system (dangerous)" in refusal.message
    manifest(
        tmp_path, HEAD + artifact_yaml(tmp_path, name) + "policy:\n  allowed_formats: [pickle]\n"
    )
    report = check(tmp_path)
    assert errors(report) == ["PG307"]
    assert report.findings[0].details == ("global: posix.system",)
    assert not marker.exists()


def test_benign_checkpoints_pass_when_pickles_are_allowed(tmp_path: Path) -> None:
    state = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)).state_dict()
    torch.save(state, tmp_path / "pytorch_model.bin")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save({k: v.to(torch.bfloat16) for k, v in state.items()}, tmp_path / "bf16.pt")
    np.save(tmp_path / "a.npy", np.arange(10.0))
    np.savez(tmp_path / "b.npz", x=np.ones(3), y=np.arange(4))
    (tmp_path / "arr.pkl").write_bytes(pickle.dumps(np.arange(5), protocol=2))
    names = ["pytorch_model.bin", "legacy.pt", "bf16.pt", "a.npy", "b.npz", "arr.pkl"]
    for name in names:
        result = loaders.scan(str(tmp_path / name), name)
        assert result.ok, (name, result)
    manifest(
        tmp_path,
        HEAD + artifact_yaml(tmp_path, *names) + "policy:\n  allowed_formats: [pickle, numpy]\n",
    )
    assert errors(check(tmp_path)) == []


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (pickle.dumps({"a": 1}, protocol=2)[:-3], "not a valid pickle"),
        (pickle.dumps({"a": 1}, protocol=2) + b"trailing", "not a valid pickle"),
        (b"PK\x03\x04" + b"\0" * 40, "unreadable or ambiguous zip"),
        (b"\x80\x02" + b"\xff" * 20, "not a valid pickle"),
    ],
)
def test_unscannable_files_fail_closed(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(content)
    result = loaders.scan(str(path), "x.bin")
    assert not result.ok
    assert why in (result.error or "")


def test_zip_nesting_is_bounded(tmp_path: Path) -> None:
    data = pickle.dumps({"a": 1}, protocol=2)
    for depth in range(5):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(f"level{depth}.pkl" if depth == 0 else f"level{depth}.zip", data)
        data = buf.getvalue()
    (tmp_path / "deep.bin").write_bytes(data)
    result = loaders.scan(str(tmp_path / "deep.bin"), "deep.bin")
    assert "nested deeper" in (result.error or "")


def test_zip_entry_lying_about_its_size(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + b"N" * 1000 + b".")
    raw = bytearray(buf.getvalue())
    # Rewrite the central directory's uncompressed size to a small number (zip-bomb shape).
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24 : cd + 28] = (10).to_bytes(4, "little")
    (tmp_path / "bomb.bin").write_bytes(bytes(raw))
    result = loaders.scan(str(tmp_path / "bomb.bin"), "bomb.bin")
    assert not result.ok


def lineage_repo(root: Path, allowed: str) -> None:
    from tests.helpers import tensors, write_st

    reference = tensors(seed=1)
    write_st(root / "ref" / "model.safetensors", reference)
    stolen = {f"renamed.{k}": torch.from_numpy(v) for k, v in reference.items()}
    torch.save(stolen, root / "pytorch_model.bin")
    policy = f"policy:\n  allowed_formats: [{allowed}]\n  lineage:\n    references: [ref]\n"
    manifest(root, HEAD + artifact_yaml(root, "pytorch_model.bin") + policy)


def test_scratch_claim_refuted_from_a_torch_checkpoint(tmp_path: Path) -> None:
    lineage_repo(tmp_path, "pickle")
    report = check(tmp_path)
    assert errors(report) == ["PG502"]
    assert "3 of 3 weight tensors" in report.findings[0].message


def test_refused_pickle_is_not_lineage_evidence(tmp_path: Path) -> None:
    lineage_repo(tmp_path, "safetensors")
    report = check(tmp_path)
    assert errors(report) == ["PG302"]
    (note,) = [f for f in report.findings if f.rule == "PG501"]
    assert "refused pickle, never loaded" in note.message


def test_without_torch_lineage_says_not_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    lineage_repo(tmp_path, "pickle")
    monkeypatch.setitem(sys.modules, "torch", None)  # as if the torch extra were not installed
    report = check(tmp_path)
    assert errors(report) == []
    (note,) = [f for f in report.findings if f.rule == "PG501"]
    assert "needs the torch extra" in note.message


def test_loader_refuses_unscanned_or_failed_scans(tmp_path: Path) -> None:
    from gate.formats import torch_weights

    bad = exposure.PickleScan(("posix.system",), ("posix.system",), ("posix.system",))
    with pytest.raises(ValueError, match="refusing"):
        torch_weights.tensor_digests(str(tmp_path / "x"), bad)


def test_torch_digests_match_safetensors_digests(tmp_path: Path) -> None:
    from gate import hashing
    from gate.formats import torch_weights
    from tests.helpers import tensors, write_st

    data = tensors(seed=3)
    st_path = write_st(tmp_path / "m.safetensors", data)
    torch.save({k: torch.from_numpy(v) for k, v in data.items()}, tmp_path / "m.bin")
    scan = loaders.scan(str(tmp_path / "m.bin"), "m.bin")
    from_torch = {t.name: t for t in torch_weights.tensor_digests(str(tmp_path / "m.bin"), scan)}
    from_st = {t.name: t for t in hashing.scan(str(st_path)).tensors or ()}
    assert from_torch == from_st


def test_the_corpus_is_live_when_loaded_by_an_unsafe_loader(tmp_path: Path) -> None:
    """Control: the payloads really execute under pickle.loads (in a throwaway process)."""
    import sys

    marker = tmp_path / "pwned"
    path = build("raw-p2", payloads(marker)["os.system"][0], tmp_path / "evil.pkl")
    code = f"import pickle; pickle.loads(open({str(path)!r}, 'rb').read())"
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=60)
    assert marker.exists()  # so the scanner tests' "marker never created" means something


def test_lying_length_fields_cost_no_memory(tmp_path: Path) -> None:
    import struct
    import tracemalloc

    path = tmp_path / "lie.pkl"  # BINBYTES8 claiming 80 MB, followed by 3 bytes (fuzz finding)
    path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 80_000_000) + b"abc")
    tracemalloc.start()
    try:
        result = loaders.scan(str(path), "lie.pkl")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "not a valid pickle" in (result.error or "")
    assert peak < 1 << 20


def test_a_fine_tuned_torch_checkpoint_is_caught_by_the_weight_tiers(tmp_path: Path) -> None:
    """No tensor is equal, so the exact tier finds nothing: the weight tiers read the
    checkpoint's values (without unpickling, formats/torch_zip.py) and see the reference."""
    from tests.helpers import tensors, write_st

    reference = tensors(seed=1)
    write_st(tmp_path / "ref" / "model.safetensors", reference)
    rng = np.random.default_rng(3)
    tuned = {k: torch.from_numpy(v + 0.05 * rng.standard_normal(v.shape).astype(v.dtype))
             for k, v in reference.items()}  # fmt: skip
    torch.save(tuned, tmp_path / "pytorch_model.bin")
    policy = "policy:\n  allowed_formats: [pickle]\n  lineage:\n    references: [ref]\n"
    manifest(tmp_path, HEAD + artifact_yaml(tmp_path, "pytorch_model.bin") + policy)
    report = check(tmp_path)
    (refuted,) = [f for f in report.findings if f.severity == "error"]
    assert refuted.rule == "PG502" and "finetune of ref" in refuted.message, refuted.message
