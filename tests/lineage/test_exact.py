from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from gate.findings import Finding, Report
from gate.hashing import TensorDigest
from gate.lineage import exact
from tests.helpers import HEAD, artifact_yaml, check, errors, manifest, rules_of, tensors, write_st


def td(
    name: str,
    digest: str,
    dtype: str = "F32",
    shape: tuple[int, ...] = (4, 4),
    constant: bool = False,
) -> TensorDigest:
    return TensorDigest(name, dtype, shape, digest * 64, constant)


def test_compare_is_name_independent_and_skips_uninformative() -> None:
    cand = [
        td("renamed.w", "a"),
        td("same.w", "b"),
        td("mine.w", "c"),
        td("norm", "d", constant=True),
        td("rope.inv_freq", "e"),
        td("ids", "f", dtype="I64"),
        td("scalar", "0", shape=(1,)),
    ]
    ref = [
        td("orig.w", "a"),
        td("same.w", "b"),
        td("norm", "d", constant=True),
        td("x.inv_freq", "e"),
        td("ids", "f", dtype="I64"),
        td("s", "0", shape=(1,)),
    ]
    ev = exact.compare(cand, ref, "ref")
    assert (ev.candidate_tensors, ev.matched, ev.renamed) == (3, 2, 1)
    assert ev.pairs == (("renamed.w", "orig.w"), ("same.w", "same.w"))
    assert not ev.all_matched
    assert (
        ev.summary()
        == "2 of 3 weight tensors (66.7% of weight bytes) are bit-identical to ref (1 stored under other names)"
    )
    assert ev.detail_lines() == ("renamed.w == ref:orig.w", "same.w == ref:(same name)")


def test_pairs_are_capped() -> None:
    cand = [td(f"w{i}", "a") for i in range(30)]
    ev = exact.compare(cand, [td("r", "a")], "ref")
    assert ev.matched == 30
    assert len(ev.pairs) == exact.MAX_PAIRS
    assert ev.detail_lines()[-1] == "... and 10 more"


def lineage_findings(report: Report) -> list[Finding]:
    return [f for f in report.findings if f.rule.startswith("PG5")]


def scratch_repo(
    root: Path,
    weights: dict[str, np.ndarray],
    reference: dict[str, np.ndarray] | None,
    strict: bool = False,
) -> Path:
    write_st(root / "model.safetensors", weights)
    lineage = "    strict: true\n" if strict else ""
    if reference is not None:
        write_st(root / "ref" / "model.safetensors", reference)
        lineage += "    references: [ref]\n"
    extra = "policy:\n  lineage:\n" + lineage if lineage else ""
    manifest(root, HEAD + artifact_yaml(root, "model.safetensors") + extra)
    return root


def test_scratch_copy_is_caught(tmp_path: Path) -> None:
    ref = tensors(seed=1)
    stolen = {f"renamed.{k}": v for k, v in ref.items()}
    report = check(scratch_repo(tmp_path, stolen, ref))
    assert errors(report) == ["PG502"]
    (f,) = [f for f in report.findings if f.rule == "PG502"]
    assert "3 of 3 weight tensors" in f.message
    assert f.location.line == 5


def test_partial_copy_is_caught(tmp_path: Path) -> None:
    ref = tensors(seed=1)
    mine = tensors(seed=2)
    mine["layers.1.w"] = ref["layers.0.w"]
    report = check(scratch_repo(tmp_path, mine, ref))
    assert errors(report) == ["PG502"]
    assert "1 of 3" in report.findings[0].message


def test_independent_model_with_shared_constants_is_not_convicted(tmp_path: Path) -> None:
    root = scratch_repo(tmp_path, tensors(seed=2), tensors(seed=1))
    report = check(root, lineage_depth="exact")
    assert errors(report) == []
    (note,) = [f for f in report.findings if f.rule == "PG501"]
    assert "not established" in note.message  # honest about what tier 0 cannot show
    assert "--lineage-depth exact" in note.message
    assert lineage_findings(check(root)) == []  # the weight tiers establish independence


def test_without_the_lineage_extra_the_note_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "scipy", None)  # as if the lineage extra were missing
    report = check(scratch_repo(tmp_path, tensors(seed=2), tensors(seed=1)))
    (note,) = [f for f in report.findings if f.rule == "PG501"]
    assert "model-provenance-gate[lineage]" in note.message


def test_scratch_without_references_is_not_tested(tmp_path: Path) -> None:
    report = check(scratch_repo(tmp_path, tensors(), None))
    assert "PG511" in rules_of(report, "note")
    assert not errors(check(scratch_repo(tmp_path, tensors(), None), strict=True))  # --strict
    strict = check(scratch_repo(tmp_path, tensors(), None, strict=True))  # lineage.strict
    assert errors(strict) == ["PG511"]


def test_unreadable_reference_is_not_checked(tmp_path: Path) -> None:
    root = scratch_repo(tmp_path, tensors(), tensors(seed=1))
    (root / "ref" / "model.safetensors").write_bytes(
        b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 1\n"
    )
    (f,) = [f for f in check(root).findings if f.rule == "PG501"]
    assert "LFS pointer" in f.message


def derived_repo(
    root: Path, weights: dict[str, np.ndarray], base: dict[str, np.ndarray], relation: str
) -> Path:
    write_st(root / "model.safetensors", weights)
    write_st(root / "base" / "model.safetensors", base)
    head = HEAD.replace("origin: scratch", "origin: derived")
    manifest(
        root,
        head
        + f"base_models:\n  - path: base\n    relation: {relation}\n"
        + artifact_yaml(root, "model.safetensors"),
    )
    return root


def test_declared_copy_verified(tmp_path: Path) -> None:
    base = tensors(seed=1)
    report = check(derived_repo(tmp_path, {f"x.{k}": v for k, v in base.items()}, base, "copy"))
    assert errors(report) == []
    assert "PG501" not in rules_of(report)


@pytest.mark.parametrize("depth", ["exact", "full"])
def test_declared_copy_that_differs(tmp_path: Path, depth: str) -> None:
    base = tensors(seed=1)
    changed = dict(base)
    changed["embed.weight"] = changed["embed.weight"] + 1  # not a function-preserving change
    report = check(derived_repo(tmp_path, changed, base, "copy"), lineage_depth=depth)
    assert errors(report) == ["PG503"]
    (f,) = lineage_findings(report)
    assert "2 of 3" in (f.message if depth == "exact" else f.details[0])


def test_finetune_that_is_a_copy(tmp_path: Path) -> None:
    base = tensors(seed=1)
    report = check(derived_repo(tmp_path, base, base, "finetune"))
    assert rules_of(report, "warning") == ["PG504"]


def test_finetune_not_verified_beyond_tier0(tmp_path: Path) -> None:
    base = tensors(seed=1)
    noise = tensors(seed=3)
    tuned = {k: v + np.float32(0.1) * noise[k] for k, v in base.items()}
    root = derived_repo(tmp_path, tuned, base, "finetune")
    report = check(root, lineage_depth="exact")
    assert errors(report) == []
    assert any("not verified" in f.message for f in report.findings if f.rule == "PG501")
    assert lineage_findings(check(root)) == []  # the weight tiers verify it


def test_declared_finetune_of_an_unrelated_base_fails(tmp_path: Path) -> None:
    report = check(derived_repo(tmp_path, tensors(seed=2), tensors(seed=1), "finetune"))
    assert errors(report) == ["PG506"]
    (f,) = lineage_findings(report)
    assert "independent of base" in f.message
    assert f.details[0].startswith("relation: independent; p = ")


def test_unpinned_hub_base_unreachable_is_not_a_pass(tmp_path: Path) -> None:
    """No revision and no Hub (the test endpoint refuses): unpinned, and nothing verified."""
    write_st(tmp_path / "model.safetensors")
    head = HEAD.replace("origin: scratch", "origin: derived")
    manifest(
        tmp_path,
        head
        + "base_models:\n  - id: org/base\n    relation: finetune\n"
        + artifact_yaml(tmp_path, "model.safetensors"),
    )
    report = check(tmp_path)
    (pin,) = [f for f in report.findings if f.rule == "PG801"]
    assert pin.severity == "error" and "could not be looked up" in pin.message
    assert report.exit_code == 1


def test_reference_outside_repo_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write_st(tmp_path / "outside" / "model.safetensors")
    root.mkdir()
    os.symlink(tmp_path / "outside", root / "ref")
    write_st(root / "model.safetensors")
    manifest(
        root,
        HEAD
        + artifact_yaml(root, "model.safetensors")
        + "policy:\n  lineage:\n    references: [ref]\n",
    )
    (f,) = [f for f in check(root).findings if f.rule == "PG501"]
    assert "outside the repository" in f.message


def sinusoids(length: int, channels: int) -> np.ndarray:
    """Whisper's fixed position table (half sines, half cosines of geometric frequencies)."""
    inc = np.log(10000) / (channels // 2 - 1)
    scaled = np.arange(length)[:, None] * np.exp(-inc * np.arange(channels // 2))[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_a_formula_position_table_is_flagged_while_digesting(dtype: str) -> None:
    """The columns a position table's digest keeps, fed in uneven pieces, tell sinusoids from a
    learned table; other names are not looked at."""
    flagged = functools.partial(_flagged, dtype)
    table = sinusoids(300, 64)
    assert flagged("model.encoder.embed_positions.weight", table)
    rng = np.random.default_rng(0)
    learned = np.cumsum(rng.standard_normal((300, 64)), axis=0).astype(np.float32)
    assert not flagged("model.decoder.embed_positions.weight", learned)
    assert not flagged("model.layers.0.mlp.weight", table)  # not a position table's name


def _flagged(dtype: str, name: str, table: np.ndarray) -> bool:
    """Whether the digest pass flags the table as a formula, its bytes fed in uneven pieces."""
    from gate.hashing import formula_probe

    raw = table.astype(np.float32)
    if dtype == "F16":
        data = raw.astype(np.float16).tobytes()
    elif dtype == "BF16":
        data = (raw.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    else:
        data = raw.tobytes()
    probe = formula_probe(name, dtype, table.shape)
    if probe is None:
        return False
    for start in range(0, len(data), 777):  # pieces cut across rows and elements
        probe.feed(memoryview(data[start : start + 777]), start)
    return probe.formula()


def fourier_basis(n_fft: int = 256) -> np.ndarray:
    """An STFT kernel as Silero VAD stores it: the Hann-windowed real and imaginary DFT rows,
    [2 * (n_fft // 2 + 1), 1, n_fft] (two of its rows, sin at 0 and at Nyquist, are zero)."""
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    real, imag = np.cos(2 * np.pi * k * n / n_fft), -np.sin(2 * np.pi * k * n / n_fft)
    return (np.concatenate([real, imag]) * window)[:, None, :].astype(np.float32)


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_a_fourier_basis_is_a_formula_and_a_learned_filter_is_not(dtype: str) -> None:
    """Found on Silero VAD (silero-vad 6.2.3): its ONNX and safetensors releases of different
    weights share the STFT basis bit for bit, which made `lineage` call unrelated versions a
    fine-tune (p = 0 from that one tensor) before it was counted as a formula."""
    from gate.lineage import stats

    basis = fourier_basis()
    rng = np.random.default_rng(1)
    learned = (0.1 * rng.standard_normal((128, 129, 3))).astype(np.float32)
    smooth = np.cumsum(rng.standard_normal((64, 1, 256)), axis=2).astype(np.float32)
    assert _flagged(dtype, "model.stft.forward_basis_buffer", basis)
    assert _flagged(dtype, "stft_conv.weight", basis)
    assert not _flagged(dtype, "stft_conv.weight", smooth)  # a named but learned filter
    assert not _flagged(dtype, "encoder.0.conv.weight", basis)  # the digest pass reads names
    assert stats.fourier_rows(basis) and not stats.fourier_rows(learned)
    assert not stats.fourier_rows(smooth)


def test_a_shared_fourier_basis_is_no_lineage(tmp_path: Path) -> None:
    """Two unrelated audio models with one STFT basis (under a name the digest pass does not
    recognise): the weight tiers do not count it, and pair the renamed layers by shape."""
    from gate.lineage.models import open_model
    from gate.lineage.relation import compare

    rng = np.random.default_rng(2)

    def model(folder: Path, names: tuple[str, str], w: np.ndarray) -> Path:
        folder.mkdir()
        save_file({"frontend.kernel": fourier_basis(), names[0]: w,
                   names[1]: rng.standard_normal((64, 128, 3)).astype(np.float32)},
                  str(folder / "model.safetensors"))  # fmt: skip
        return folder

    w = rng.standard_normal((128, 129, 3)).astype(np.float32)
    a = model(tmp_path / "a", ("conv1.weight", "conv2.weight"), w)
    b = model(tmp_path / "b", ("encoder.0.conv.weight", "encoder.1.conv.weight"),
              rng.standard_normal((128, 129, 3)).astype(np.float32))  # fmt: skip
    tuned = model(tmp_path / "c", ("encoder.0.conv.weight", "encoder.1.conv.weight"),
                  w + 0.3 * rng.standard_normal(w.shape).astype(np.float32))  # fmt: skip
    (v,) = compare(open_model(str(b)), [open_model(str(a))]).verdicts
    assert not v.dependent, v.summary()
    (v,) = compare(open_model(str(tuned)), [open_model(str(a))]).verdicts
    assert v.relation == "finetune", v.summary()  # conv1 paired with encoder.0.conv by shape


def test_a_shared_formula_table_is_no_copy(tmp_path: Path) -> None:
    """Two models trained apart hold the same fixed sinusoids (every Whisper does): a `scratch`
    claim is not contradicted by them, at the exact tier or with the weight tiers (was PG502,
    "1 of 3 weight tensors are bit-identical")."""
    rng = np.random.default_rng(0)

    def model() -> dict[str, np.ndarray]:
        return {"model.encoder.embed_positions.weight": sinusoids(64, 32),
                "model.encoder.layers.0.fc1.weight": rng.standard_normal((64, 32)).astype(np.float32),
                "model.encoder.layers.0.fc2.weight": rng.standard_normal((32, 64)).astype(np.float32)}  # fmt: skip

    root = scratch_repo(tmp_path, model(), model())
    for depth in ("exact", "full"):
        report = check(root, lineage_depth=depth)
        assert not errors(report), [f.message for f in lineage_findings(report)]


def test_the_lock_file_keeps_the_formula_flag() -> None:
    from gate import lockfile

    t = TensorDigest("pos.weight", "F32", (64, 32), "a" * 64, False, True)
    assert lockfile.tensor_entry(t) == {"dtype": "F32", "shape": [64, 32], "blake3": "a" * 64,
                                        "formula": True}  # fmt: skip
