"""Lineage verdicts on the tiny model zoo (tests/zoo/build.py): every relation, real models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gate.lineage import calibration
from gate.lineage.models import open_model
from gate.lineage.relation import compare
from gate.lineage.result import LineageReport
from tests.zoo import build

pytestmark = pytest.mark.slow  # the trained model zoo

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {"base": "copy"}


@pytest.fixture(scope="session")
def truth(zoo: Path) -> dict[str, Any]:
    return build.truth(zoo)


# the base re-published in another format, beside the base itself and its GGUF and 4-bit forms
FORMATS = [".onnx", ".onnx-fp16", ".onnx-anon", ".onnx-int8", ".onnx-int8-pc", ".onnx-nbits4",
           ".torch"]  # fmt: skip


def names() -> list[str]:
    """Every zoo model of the first llama and the first gpt2 base (the others: the bench)."""
    kinds = ["", ".copy", ".renamed", ".bf16", ".fp16", ".ft-short", ".ft-long", ".cpt",
             ".lora-adapter", ".lora-merged", ".merge-linear", ".merge-slerp", ".task-arith",
             ".ties", ".dare"]  # fmt: skip
    llama_only = [".gguf-q8_0", ".gguf-q4_0", ".int8", ".depth-pruned", ".depth-pruned-healed",
                  ".width-pruned", ".width-pruned-healed", ".vocab-expanded", ".permuted",
                  ".scaled", ".rotated", ".all-attacks", ".passthrough",
                  ".onnx-ft", ".gptq", ".awq", ".nf4", ".mlx", *FORMATS,
                  ".sib-layers-a", ".sib-layers-b", ".sib-vocab-a", ".sib-vocab-b", ".cpt-b"]  # fmt: skip
    return [f"llama-s0{k}" for k in kinds + llama_only] + [f"gpt2-s0{k}" for k in kinds]


def lineage(zoo: Path, name: str, refs: list[str]) -> LineageReport:
    return compare(open_model(str(zoo / name), name), [open_model(str(zoo / r), r) for r in refs])


@pytest.mark.parametrize("name", names())
def test_relation_to_the_true_base(zoo: Path, truth: dict[str, Any], name: str) -> None:
    t = truth[name]
    parents = t.get("parents") or [t["base"]]
    report = lineage(zoo, name, parents)
    v = report.verdicts[0]
    assert v.relation == EXPECTED.get(t["relation"], t["relation"]), v.summary()
    if v.relation == "adapter":
        assert v.p_value is None and v.details["adapter_rank"] == 4
    else:
        assert v.dependent and v.p_value is not None and v.p_value <= 1e-3


@pytest.mark.parametrize("name", names())
def test_independent_of_another_seed(zoo: Path, truth: dict[str, Any], name: str) -> None:
    """The hardest negatives: same architecture, data and hyper-parameters, other seed."""
    t = truth[name]
    other = "llama-s1" if t["family"] == "llama" else "gpt2-s1"
    if other in (t.get("parents") or []):
        other = "llama-s2"
    v = lineage(zoo, name, [other]).verdicts[0]
    assert not v.dependent, v.summary()
    assert v.relation in ("independent", "adapter")


def test_every_cross_format_pair_of_one_base(zoo: Path, truth: dict[str, Any]) -> None:
    """The base in every format the zoo publishes, each against each (182 ordered pairs): the
    same model either way round; each against each form of another seed's base (196): not."""
    import itertools

    opened: dict[str, Any] = {}

    def m(name: str) -> Any:
        return opened.setdefault(name, open_model(str(zoo / name), name))

    wrong = []
    for a, b in itertools.permutations(build.CROSS_FORMATS, 2):
        c, r = "llama-s0" + a, "llama-s0" + b
        v = compare(m(c), [m(r)]).verdicts[0]
        if v.relation != build.cross_expected(truth, c, r):
            wrong.append((c, r, v.relation))
    assert wrong == []
    dependent = [
        (a, b)
        for a, b in itertools.product(build.CROSS_FORMATS, repeat=2)
        if compare(m("llama-s0" + a), [m("llama-s1" + b)]).verdicts[0].dependent
    ]
    assert dependent == []


def test_gpt2_exported_to_onnx_is_its_copy(zoo: Path, tmp_path: Path) -> None:
    """GPT-2's Conv1D stores linear weights [in, out], as ONNX's MatMul does: the export pairs
    with the checkpoint as stored, either way round (was `finetune`, its matrices unpaired)."""
    import shutil
    import warnings

    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "gpt2-onnx"
    out.mkdir()
    with warnings.catch_warnings():  # the exporter's own deprecation chatter
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(zoo / "gpt2-s0")
        build._export_onnx(torch, model, out / "model.onnx", torch.arange(16)[None])
    for f in ("config.json", "tokenizer.json"):
        shutil.copy(zoo / "gpt2-s0" / f, out / f)
    onnx, st = open_model(str(out), "onnx"), open_model(str(zoo / "gpt2-s0"), "gpt2-s0")
    assert any(t.transposed for t in onnx.tensors.values())
    v = compare(onnx, [st]).verdicts[0]
    assert v.relation == "copy" and v.effects["compared_fraction"] == 1.0, v.details
    # the other way round every tensor pairs exactly but the position table, which the export
    # (at a fixed length) folded into a constant
    v = compare(st, [onnx]).verdicts[0]
    assert v.dependent and v.effects["exact_fraction"] == v.effects["compared_fraction"] == 0.975
    other = open_model(str(zoo / "gpt2-s1"), "gpt2-s1")
    assert not compare(onnx, [other]).verdicts[0].dependent


def test_siblings_are_named_so(zoo: Path, truth: dict[str, Any]) -> None:
    """Two children of llama-s0 that kept different layers, or different parts of its
    vocabulary: `sibling` of each other, either way round, with the shared tensors named.
    Two continued pre-trainings of it are related (the engine cannot tell them from a
    fine-tune of each other without their ancestor: docs/lineage.md)."""
    for kind in ("layers", "vocab"):
        a, b = f"llama-s0.sib-{kind}-a", f"llama-s0.sib-{kind}-b"
        assert truth[a]["sibling_of"] == b
        for x, y in ((a, b), (b, a)):
            v = lineage(zoo, x, [y]).verdicts[0]
            assert v.relation == "sibling" and v.dependent, v.summary()
            assert v.details["shared"], v.details
    v = lineage(zoo, "llama-s0.cpt-b", ["llama-s0.cpt"]).verdicts[0]
    assert v.dependent and v.relation == "finetune"


def test_recovered_details(zoo: Path) -> None:
    linear = lineage(zoo, "llama-s0.merge-linear", ["llama-s0", "llama-s1"]).verdicts[0]
    assert linear.details["merge"]["method"] == "linear"
    assert linear.details["merge"]["mean_coefficients"] == pytest.approx([0.6, 0.4], abs=0.01)
    slerp = lineage(zoo, "llama-s0.merge-slerp", ["llama-s0", "llama-s1"]).verdicts[0]
    assert slerp.details["merge"]["method"] == "slerp"
    assert slerp.details["merge"]["slerp_t"] == pytest.approx(0.3, abs=0.01)
    task = lineage(zoo, "llama-s0.task-arith", ["llama-s0", "llama-s0.ft-long"]).verdicts[0]
    assert task.details["merge"]["mean_coefficients"] == pytest.approx([0.3, 0.7], abs=0.01)
    pruned = lineage(zoo, "llama-s0.depth-pruned-healed", ["llama-s0"]).verdicts[0]
    assert pruned.details["layer_map"] == [0, 2]
    assert [row.reference_layer for row in pruned.layers if row.layer != "other"] == [0, 2]
    width = lineage(zoo, "llama-s0.width-pruned", ["llama-s0"]).verdicts[0]
    assert width.details["widths"]["blk.*.ffn_up.weight"] == [128, 192]
    q4 = lineage(zoo, "llama-s0.gguf-q4_0", ["llama-s0"]).verdicts[0]
    assert q4.details["quantization"] == "Q4_0"
    int8 = lineage(zoo, "llama-s0.int8", ["llama-s0"]).verdicts[0]
    assert int8.details["quantization"] == "INT8_ROWWISE"
    assert min(e.effect for e in int8.tensors if e.layer is not None) > 0.999
    lora = lineage(zoo, "llama-s0.lora-merged", ["llama-s0"]).verdicts[0]
    assert lora.details["adapter_rank"] == 4
    dare = lineage(zoo, "llama-s0.dare", ["llama-s0"]).verdicts[0]
    assert dare.details["delta"]["exactly_unchanged_weights"] > 0.7
    bf16 = lineage(zoo, "llama-s0.bf16", ["llama-s0"]).verdicts[0]
    assert {e.test for e in bf16.tensors} == {"recast"}
    permuted = lineage(zoo, "llama-s0.permuted", ["llama-s0"]).verdicts[0]
    assert "multiset" in {e.test for e in permuted.tensors}
    attacked = lineage(zoo, "llama-s0.all-attacks", ["llama-s0"]).verdicts[0]
    assert attacked.details["permutation"]["moved"] > 0
    assert any(e.rotated for e in attacked.tensors)
    passthrough = lineage(zoo, "llama-s0.passthrough", ["llama-s0", "llama-s1"])
    assert [v.details["layers_taken_unchanged"] for v in passthrough.verdicts] == [[0, 1], [2, 3]]
    vocab = lineage(zoo, "llama-s0.vocab-expanded", ["llama-s0"]).verdicts[0]
    assert vocab.details["vocabulary"]["aligned_tokens"] == vocab.structure["vocabulary"]["shared"]


def test_correction_across_references(zoo: Path) -> None:
    one = lineage(zoo, "llama-s0.ft-long", ["llama-s1"]).verdicts[0]
    three = lineage(zoo, "llama-s0.ft-long", ["llama-s1", "llama-s2", "llama-s3"]).verdicts[0]
    assert one.log10_p is not None and three.log10_p is not None
    assert three.log10_p == pytest.approx(min(0.0, one.log10_p + 0.4771), abs=1e-3)


def test_shipped_calibration_holds_on_this_zoo(zoo: Path) -> None:
    """The matching test's null hit rate in the package bounds the rate on this zoo's negatives."""
    sys.path.insert(0, str(ROOT))
    from bench import lineage_accuracy

    _, negatives = lineage_accuracy.pairs(build.truth(zoo))
    tested, hits = lineage_accuracy.null_rows(zoo, negatives[:40])
    assert tested > 100_000
    assert hits / tested <= calibration.NULL_HIT_RATE


def run(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("provenance-gate")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300)


def test_lineage_command_json_follows_its_schema(zoo: Path) -> None:
    r = run("lineage", str(zoo / "llama-s0.ft-long"), "-r", str(zoo / "llama-s0"),
            "-r", str(zoo / "llama-s1"), "--format", "json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    schema = json.loads((ROOT / "schemas" / "lineage.v1.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert [x["relation"] for x in doc["references"]] == ["finetune", "independent"]
    assert doc["verdict"] == f"finetune of {zoo / 'llama-s0'}"


def test_lineage_command_text_and_exit_codes(zoo: Path, tmp_path: Path) -> None:
    r = run("lineage", str(zoo / "llama-s0.rotated"), "-r", str(zoo / "llama-s0"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1] == f"verdict:   copy of {zoo / 'llama-s0'}"
    assert lines[5] == "  the same function: weights permuted, scaled or rotated"
    r = run("lineage", str(zoo / "llama-s0.rotated"), "-r", str(zoo / "llama-s0"),
            "--fail-if-dependent", "-f", "markdown", "-o", str(tmp_path / "out.md"))  # fmt: skip
    assert r.returncode == 1
    assert "| **copy** |" in (tmp_path / "out.md").read_text()
    r = run("lineage", str(zoo / "llama-s0.ft-long"), "-r", str(zoo / "gpt2-s0"),
            "--fail-if-dependent")  # fmt: skip
    assert r.returncode == 0, r.stdout
    assert "INDEPENDENT" in r.stdout or "INCONCLUSIVE" in r.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("lineage", str(empty), "-r", str(zoo / "llama-s0"))
    assert (r.returncode, r.stdout) == (3, "")
    assert "no readable safetensors, GGUF, ONNX or torch tensors" in r.stderr
    assert "Traceback" not in r.stderr


def zoo_repo(
    tmp: Path,
    zoo: Path,
    candidate: str,
    bases: list[tuple[str, str, float | None]],
    scratch_refs: list[str] = (),  # type: ignore[assignment]
) -> Path:
    """A model repository holding a zoo model, its declared bases as local folders, a manifest."""
    import shutil

    from tests.helpers import HEAD, artifact_yaml, manifest

    root = tmp / "repo"
    root.mkdir(parents=True)
    files = [f.name for f in (zoo / candidate).iterdir()]
    for f in files:
        shutil.copy(zoo / candidate / f, root / f)
    weights = sorted(f for f in files if f.endswith((".safetensors", ".gguf")))
    head = HEAD
    for folder in [b for b, _, _ in bases] + list(scratch_refs):
        shutil.copytree(zoo / folder, root / "bases" / folder)
    if bases:
        head = head.replace("origin: scratch", "origin: derived") + "base_models:\n"
        for folder, relation, weight in bases:
            head += f"  - path: bases/{folder}\n    relation: {relation}\n"
            if weight is not None:
                head += f"    weight: {weight}\n"
    body = head + artifact_yaml(root, *weights)
    if scratch_refs:
        body += (
            "policy:\n  lineage:\n    references: ["
            + ", ".join(f"bases/{r}" for r in scratch_refs)
            + "]\n"
        )
    manifest(root, body)
    return root


def pg5(report: Any) -> list[tuple[str, int]]:
    return [(f.rule, f.location.line) for f in report.findings if f.rule.startswith("PG5")]


def test_check_verifies_a_true_finetune_and_refutes_a_false_scratch(
    zoo: Path, tmp_path: Path
) -> None:
    from tests.helpers import check

    ok = zoo_repo(tmp_path / "a", zoo, "llama-s0.ft-long", [("llama-s0", "finetune", None)])
    assert pg5(check(ok)) == []
    lie = zoo_repo(
        tmp_path / "b", zoo, "llama-s0.ft-long", [], scratch_refs=["llama-s1", "llama-s0"]
    )
    report = check(lie)
    assert pg5(report) == [("PG502", 5)]
    (f,) = [f for f in report.findings if f.rule == "PG502"]
    assert "finetune of bases/llama-s0" in f.message
    assert f.details[0].startswith("relation: finetune; p < 1e-")


def test_check_names_the_wrong_relation_and_merge_weight(zoo: Path, tmp_path: Path) -> None:
    from tests.helpers import check, errors

    wrong = zoo_repo(tmp_path / "a", zoo, "llama-s0.gguf-q8_0", [("llama-s0", "finetune", None)])
    report = check(wrong)
    assert errors(report) == ["PG505"]
    assert "quantized" in report.findings[0].hint  # type: ignore[operator]
    merge = zoo_repo(tmp_path / "b", zoo, "llama-s0.merge-linear",
                     [("llama-s0", "merge", 0.5), ("llama-s1", "merge", 0.4)])  # fmt: skip
    report = check(merge)
    assert pg5(report) == [("PG507", 9)]
    (f,) = [f for f in report.findings if f.rule == "PG507"]
    assert float(str(f.found)) == pytest.approx(0.6, abs=0.01)
    unrelated = zoo_repo(tmp_path / "c", zoo, "llama-s0.ft-short", [("llama-s2", "finetune", None)])
    assert errors(check(unrelated)) == ["PG506"]
    adapter = zoo_repo(
        tmp_path / "d", zoo, "llama-s0.lora-adapter", [("llama-s0", "adapter", None)]
    )
    assert pg5(check(adapter)) == []


def test_the_zoo_trains_deterministically_and_says_how_far_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    said: list[str] = []
    threads = torch.get_num_threads()
    try:
        builder = build._Builder(tmp_path / "z", said.append)
        assert torch.get_num_threads() == build.THREADS  # the same reductions on any machine
        one = builder.train(builder.llama(7), 3, 3e-3, 0).state_dict()
        two = builder.train(builder.llama(7), 3, 3e-3, 0).state_dict()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    monkeypatch.setattr(build, "PROGRESS_EVERY", 0.0)
    builder.saved("llama-s9", {})
    assert said and said[-1].startswith("zoo:   1 models after") and "llama-s9" in said[-1]
