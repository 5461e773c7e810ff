"""The logit probe (gate/lineage/probe.py) on the tiny model zoo: real models, real logits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gate.lineage import probe

pytestmark = pytest.mark.slow  # the logit probe (torch and transformers) on the trained zoo

ROOT = Path(__file__).resolve().parents[2]
GATE = str(Path(sys.executable).parent / "provenance-gate")


@pytest.fixture(scope="module")
def outs(zoo: Path) -> dict[str, probe.Outputs]:
    names = ["llama-s0", "llama-s1", "llama-s0.copy", "llama-s0.permuted", "llama-s0.rotated",
             "llama-s0.ft-short", "llama-s0.ft-long", "llama-s0.vocab-expanded", "gpt2-s0"]  # fmt: skip
    return {n: probe.outputs(str(zoo / n)) for n in names}


def against(outs: dict[str, probe.Outputs], cand: str, ref: str) -> probe.ProbeResult:
    return probe.compare(outs[cand], outs[ref], ref, alpha=0.01)


def test_a_copy_and_function_preserving_attacks_give_identical_logits(
    outs: dict[str, probe.Outputs],
) -> None:
    pairs = probe.calibration()["null"]["llama"]["cosine"]
    for cand in ("llama-s0.copy", "llama-s0.permuted", "llama-s0.rotated"):
        r = against(outs, cand, "llama-s0")
        assert r.cosine > 0.99999 and r.top1 > 0.99 and r.kl < 1e-4, (cand, r)
        assert r.dependent and r.p_value == pytest.approx(1 / (len(pairs) + 1))
        assert r.positions > 500 and len(r.prompts) == 12


def test_independent_seeds_score_high_raw_cosine_but_are_not_convicted(
    outs: dict[str, probe.Outputs],
) -> None:
    """Same architecture, tokenizer and corpus, other seed: a bare 0.7 threshold would convict."""
    r = against(outs, "llama-s1", "llama-s0")
    assert 0.7 < r.cosine < 0.9
    assert r.p_value is not None and r.p_value > 0.01 and r.dependent is False
    assert r.null["pairs"] >= 200 and r.null["max_cosine"] < 0.9


def test_a_light_finetune_is_dependent_a_long_one_is_not_seen(
    outs: dict[str, probe.Outputs],
) -> None:
    short = against(outs, "llama-s0.ft-short", "llama-s0")
    assert short.dependent and short.cosine > 0.99
    long = against(outs, "llama-s0.ft-long", "llama-s0")  # why the probe never judges alone
    assert long.dependent is False and long.kl > 1.0


def test_a_changed_tokenizer_is_aligned_by_token_string(
    outs: dict[str, probe.Outputs],
) -> None:
    cand, ref = outs["llama-s0.vocab-expanded"], outs["llama-s0"]
    assert len(cand.vocab) > len(ref.vocab)
    r = against(outs, "llama-s0.vocab-expanded", "llama-s0")
    assert r.shared_vocabulary == len(ref.vocab) and r.dependent, r
    other = against(outs, "gpt2-s0", "llama-s0")  # another architecture: no calibration
    assert other.p_value is None and other.dependent is None and "vs" in other.null["architecture"]


def test_models_the_probe_must_not_run(zoo: Path, tmp_path: Path) -> None:
    with pytest.raises(probe.ProbeError, match="not in the checkpoint"):
        probe.outputs(str(zoo / "llama-s0.renamed"))  # transformers would invent the weights
    with pytest.raises(probe.ProbeError, match="no safetensors"):
        probe.outputs(str(zoo / "llama-s0.gguf-q8_0"))
    shutil.copytree(zoo / "llama-s0", tmp_path / "remote-code")
    cfg = json.loads((tmp_path / "remote-code" / "config.json").read_text())
    cfg.update(model_type="evil", auto_map={"AutoModelForCausalLM": "evil.Model"})
    (tmp_path / "remote-code" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "remote-code" / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(probe.ProbeError, match="cannot load"):
        probe.outputs(str(tmp_path / "remote-code"))


def test_reference_outputs_are_cached(
    zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = probe.run(str(zoo / "llama-s0.copy"), [str(zoo / "llama-s0")], cache_dir=str(tmp_path))
    calls: list[str] = []
    real = probe.outputs

    def counting(folder: str, device: str = "cpu") -> probe.Outputs:
        calls.append(folder)
        return real(folder, device)

    monkeypatch.setattr(probe, "outputs", counting)
    again = probe.run(str(zoo / "llama-s0.copy"), [str(zoo / "llama-s0")], cache_dir=str(tmp_path))
    assert calls == [str(zoo / "llama-s0.copy")]  # the reference came from the cache
    assert [r.cosine for r in again] == [r.cosine for r in first]  # type: ignore[union-attr]


def test_lineage_command_with_probe(zoo: Path) -> None:
    done = subprocess.run(
        [GATE, "lineage", str(zoo / "llama-s0.ft-long"), "-r", str(zoo / "llama-s0"), "--probe",
         "-f", "json"], capture_output=True, text=True, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout)
    schema = json.loads((ROOT / "schemas" / "lineage.v1.schema.json").read_text())
    jsonschema.validate(report, schema)
    (v,) = report["references"]
    assert v["relation"] == "finetune" and v["probe"]["dependent"] is False
    assert any("the probe and the weights disagree" in n for n in v["notes"])
    text = subprocess.run([GATE, "lineage", str(zoo / "llama-s0.copy"), "-r",
                           str(zoo / "llama-s0"), "--probe"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    assert "logit probe (set v1): centred cosine 1.0000, top-1 1.000" in text


def probe_repo(root: Path, zoo: Path, weights: str) -> Path:
    for f in ("model.safetensors", "config.json", "tokenizer.json"):
        shutil.copy(zoo / weights / f, root / f)
    shutil.copytree(zoo / "llama-s0", root / "base")
    (root / "provenance.yaml").write_text(
        "version: 1\nmodel:\n  name: m\n  license: apache-2.0\n  origin: derived\n"
        "base_models:\n  - path: base\n    relation: finetune\n    license: apache-2.0\n"
        "artifacts:\n  - path: model.safetensors\npolicy:\n  lineage:\n    probe: true\n"
    )
    subprocess.run([GATE, "lock", str(root)], check=True, capture_output=True)
    return root


def findings(root: Path) -> list[dict[str, Any]]:
    done = subprocess.run([GATE, "check", str(root), "-f", "json"], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout)["findings"])


def test_check_reports_the_probe_beside_the_weights(zoo: Path, tmp_path: Path) -> None:
    (tmp_path / "short").mkdir()
    got = findings(probe_repo(tmp_path / "short", zoo, "llama-s0.ft-short"))
    (note,) = [f for f in got if f["rule"] == "PG509"]
    assert "centred cosine" in note["message"] and len(note["details"]) == 12
    assert not [f for f in got if f["rule"] == "PG510"]
    (tmp_path / "long").mkdir()
    got = findings(probe_repo(tmp_path / "long", zoo, "llama-s0.ft-long"))
    (warn,) = [f for f in got if f["rule"] == "PG510"]
    assert warn["severity"] == "warning" and "weights say finetune" in warn["message"]


def test_without_torch_the_probe_is_not_run_and_says_so(
    zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import check

    root = probe_repo(tmp_path, zoo, "llama-s0.ft-short")
    monkeypatch.setattr(probe, "available", lambda: False)
    (f,) = [f for f in check(root).findings if f.rule == "PG509"]
    assert f.found == "not run" and "torch" in f.message


# The zoo is trained on the CPU, and float rounding differs between CPU types, so a zoo built on
# another machine is another sample of the same recipe. Measured (sorted null cosines, the same
# zoo recipe built on an Intel machine and on an AMD EPYC): at most 0.045 apart for llama and
# 0.112 for gpt2. On the zoo a table was computed from, it must be reproduced to float precision.
CROSS_MACHINE_SPREAD = 0.15


def test_the_shipped_calibration_is_the_benchmarks() -> None:
    """bench/probe_accuracy.py recomputes the table from the zoo; the shipped one must match."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "probe_accuracy.py"), "--json",
                           "/dev/stdout", "--quiet"], capture_output=True, text=True, check=True)  # fmt: skip
    result = json.loads(done.stdout)
    shipped = probe.calibration()
    assert result["table"]["null"].keys() == shipped["null"].keys()
    same_zoo = result["table"]["zoo"] == shipped["zoo"]
    for arch, null in shipped["null"].items():
        got = result["table"]["null"][arch]["cosine"]
        assert len(got) == len(null["cosine"])
        if same_zoo:  # float32 sums may differ in the last digits
            assert got == pytest.approx(null["cosine"], abs=1e-4)
        else:
            assert got == pytest.approx(null["cosine"], abs=CROSS_MACHINE_SPREAD)
    assert shipped["probe_version"] == probe.prompts()[0]
    assert result["false_positives_at_0.01"].startswith("0/")
