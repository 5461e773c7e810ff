"""The supply-chain reports' golden documents (docs/examples/): a passing and a failing model, each
with a base in a folder and a base on the Hub, rendered as a CycloneDX 1.6 ML-BOM and as an in-toto
verification summary, checked against the published schemas and compared with the stored files.

Only what changes from run to run (time, serial number, tool version) and the p-values' digits
(BLAS may round differently) are masked before the comparison; the relations, techniques and
confidences are asserted as they are. Rewrite the documents with PG_WRITE_GOLDEN=1.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

import gate
from gate.reporters import cyclonedx, intoto
from tests.reporters.scenarios import report
from tests.reporters.test_intoto import validated

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
WHEN = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.timezone.utc)
SERIAL = "00000000-0000-4000-8000-000000000000"
VOLATILE_PROPS = {"provenance-gate:pValue", "provenance-gate:log10P", "provenance-gate:evidence"}


def masked(doc: Any) -> Any:
    """doc with the p-values' digits and the tool's version replaced by placeholders."""
    if isinstance(doc, dict):
        if doc.get("name") in VOLATILE_PROPS and "value" in doc:
            return {**doc, "value": "<p>"}
        out = {k: masked(v) for k, v in doc.items()}
        if "technique" in out and isinstance(out.get("value"), str):
            out["value"] = re.sub(r"p [<=] [0-9.e-]+", "p <p>", out["value"])
        return out
    if isinstance(doc, list):
        return [masked(v) for v in doc]
    return "<version>" if doc == gate.__version__ else doc


def golden(name: str, doc: dict[str, Any]) -> None:
    path = EXAMPLES / name
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("PG_WRITE_GOLDEN"):
        path.write_text(text)
    assert masked(json.loads(path.read_text())) == masked(doc), f"{name} changed: PG_WRITE_GOLDEN=1"


def ancestors(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (model,) = doc["components"]
    return {a["name"]: a for a in model["pedigree"]["ancestors"]}


def props(component: dict[str, Any]) -> dict[str, str]:
    return {p["name"].removeprefix("provenance-gate:"): p["value"] for p in component["properties"]}


@pytest.mark.parametrize("passing", [True, False], ids=["pass", "fail"])
def test_cyclonedx_golden(tmp_path: Path, passing: bool) -> None:
    done = report(tmp_path / "m", passing)
    assert done.exit_code == (0 if passing else 1)
    doc = cyclonedx.bom(done, "1.6", WHEN, SERIAL)
    text = json.dumps(doc)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    later = cyclonedx.bom(done, "1.7", WHEN, SERIAL)
    assert JsonStrictValidator(SchemaVersion.V1_7).validate_str(json.dumps(later)) is None
    golden(f"cyclonedx-{'pass' if passing else 'fail'}.json", doc)

    (model,) = doc["components"]
    assert model["type"] == "machine-learning-model" and model["name"] == "acme/tiny"
    card = model["modelCard"]
    assert card["modelParameters"]["task"] == "text-generation"
    assert card["modelParameters"]["modelArchitecture"] == "LlamaForCausalLM"
    assert card["quantitativeAnalysis"]["performanceMetrics"][0]["value"] == "0.42"
    files = {f["name"]: f for f in model["components"]}
    assert files["model.safetensors"]["hashes"][0]["alg"] == "SHA-256"
    found = ancestors(doc)
    local, remote = found["base"], found["acme/base" if passing else "acme/other"]
    assert remote["purl"] == f"pkg:huggingface/{remote['name']}@{remote['version']}"
    assert "purl" not in local and "version" not in local  # a folder has no pinned revision
    if passing:
        assert model["licenses"] == [{"license": {"id": "Apache-2.0"}}]
        for base in (local, remote):
            assert props(base)["relation:declared"] == props(base)["relation:found"] == "merge"
            (identity,) = base["evidence"]["identity"]
            assert identity["methods"][0]["technique"] == "binary-analysis"
            assert identity["confidence"] > 0.999
        assert props(doc["metadata"])["verdict"] == "pass"
    else:
        assert model["licenses"] == [{"license": {"name": "llama2"}}]  # a Hub id, not SPDX
        assert props(local)["relation:found"] == "copy" and props(local)["pValue"] == "0"
        (identity,) = local["evidence"]["identity"]
        assert identity["methods"][0]["technique"] == "hash-comparison"
        assert identity["confidence"] == 1.0
        assert props(remote)["relation:found"] == "independent"
        assert remote["evidence"]["identity"][0]["confidence"] < 0.5
        meta = props(doc["metadata"])
        assert meta["verdict"] == "fail" and meta["failedRules"] == "PG506"  # PG504: a warning


@pytest.mark.parametrize("passing", [True, False], ids=["pass", "fail"])
def test_intoto_golden(tmp_path: Path, passing: bool) -> None:
    done = report(tmp_path / "m", passing)
    doc = intoto.statement(done, WHEN)
    out = tmp_path / "vsa.json"
    out.write_text(json.dumps(doc))
    validated(out)
    golden(f"intoto-{'pass' if passing else 'fail'}.json", doc)
    predicate = doc["predicate"]
    assert predicate["verificationResult"] == ("PASSED" if passing else "FAILED")
