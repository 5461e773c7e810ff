"""CycloneDX: the model and its declared lineage as an ML-BOM (spec 1.6; 1.7 on request).

One `machine-learning-model` component: the manifest's license (one SPDX id as `id`, a compound
SPDX expression as `expression`, anything else, such as the Hub's `llama2`, by `name`), the model
card's front matter and config.json where they map onto `modelCard`, the declared files as
nested `file` components with their SHA-256 (as found, or a Git LFS pointer's oid) and BLAKE3
where the signature check computed one, and every declared base as a `pedigree.ancestors` entry:
its pinned revision (a `pkg:huggingface` purl for a Hub base), its license, the declared relation
and what the weights showed, as `evidence.identity` (technique `hash-comparison` when identical
digests settled it, `binary-analysis` for the weight statistics; confidence 1 - p, p corrected
for every test) and as `provenance-gate:` properties. The verdict, exit code and failed rules
are metadata properties.

The JSON is written directly: cyclonedx-python-lib's object model drops `modelCard` on a round
trip (the tests validate the output with its strict JSON validator instead).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import uuid
from typing import Any

from gate import paths
from gate.findings import ArtifactResult, BaseLineage, Report
from gate.reporters.interface import ReporterOptions
from gate.reporters.intoto import VERIFIER_ID, model_digest

NS = "provenance-gate"  # the namespace of this tool's properties
MAX_CONFIG_BYTES = 1 << 20
MAX_LIST = 256  # card lists (datasets, tags, metrics) are third-party text: capped
MAX_TEXT = 1024
# purl's huggingface type: pkg:huggingface/<owner>/<name>@<commit>; Hub ids use these characters
_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def bom(
    report: Report,
    spec: str = "1.6",
    now: datetime.datetime | None = None,
    serial: str | None = None,
) -> dict[str, Any]:
    """The BOM document of a report (now, serial: fixed values for reproducible output)."""
    when = (now or datetime.datetime.now(datetime.timezone.utc)).replace(microsecond=0)
    failed = sorted({f.rule for f in report.findings if f.severity == "error"})
    meta = [
        _prop("verdict", report.verdict),
        _prop("exitCode", str(report.exit_code)),
        _prop("failedRules", ",".join(failed)),
        _prop("manifest", report.manifest),
    ]
    if report.manifest_sha256:
        meta.append(_prop("manifestSha256", report.manifest_sha256))
    return {
        "$schema": f"http://cyclonedx.org/schema/bom-{spec}.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": spec,
        "serialNumber": f"urn:uuid:{serial or uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": when.isoformat().replace("+00:00", "Z"),
            "tools": {
                "components": [
                    {
                        "type": "application",
                        "name": "provenance-gate",
                        "version": report.tool_version,
                        "externalReferences": [{"type": "website", "url": VERIFIER_ID}],
                    }
                ]
            },
            "properties": meta,
        },
        "components": [_model(report)],
    }


def _model(report: Report) -> dict[str, Any]:
    name = report.model_name or "model"
    files = [_file(a) for a in report.artifacts]
    digests = {a.path: a.sha256 for a in report.artifacts if a.sha256}
    component: dict[str, Any] = {"type": "machine-learning-model", "bom-ref": "model", "name": name}
    licenses = _licenses(report.license, report.license_name, report.license_link)
    if licenses:
        component["licenses"] = licenses
    front = _front_matter(report)
    tags = _strings(front.get("tags"))
    if tags:
        component["tags"] = tags
    if report.bases:
        component["pedigree"] = {"ancestors": [_ancestor(i, b) for i, b in enumerate(report.bases)]}
    card = _model_card(front, _config(report.root))
    if card:
        component["modelCard"] = card
    if files:
        component["components"] = files
    component["properties"] = [
        # OpenSSF Model Signing's model digest (a model.sig's subject): SHA-256 over the files'
        # SHA-256s in path order; a property, as it is no hash of one blob of bytes
        _prop("openssfModelDigest", "sha256:" + model_digest(digests)),
    ]
    return component


def _file(a: ArtifactResult) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "file", "bom-ref": f"file:{a.path}", "name": a.path}
    hashes = []
    if a.sha256:
        hashes.append({"alg": "SHA-256", "content": a.sha256})
    if a.blake3:
        hashes.append({"alg": "BLAKE3", "content": a.blake3})
    if hashes:
        out["hashes"] = hashes
    props = [
        _prop("format", a.format),
        _prop("verifiedBy", a.method),
        _prop("ok", "true" if a.ok else "false"),
    ]
    if a.size is not None:
        props.append(_prop("size", str(a.size)))
    out["properties"] = props
    return out


def _ancestor(i: int, base: BaseLineage) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "machine-learning-model", "bom-ref": f"base:{i}"}
    out["name"] = base.name
    if base.revision:
        out["version"] = base.revision
        owner, _, repo = base.name.partition("/")
        if base.hub and _HUB_NAME.match(owner) and _HUB_NAME.match(repo):
            out["purl"] = f"pkg:huggingface/{owner}/{repo}@{base.revision.lower()}"
    licenses = _licenses(base.license)
    if licenses:
        out["licenses"] = licenses
    confidence = _confidence(base)
    if base.found is not None and confidence is not None:
        method = "hash-comparison" if base.exact else "binary-analysis"
        out["evidence"] = {
            "identity": [
                {
                    "field": "name",
                    "confidence": confidence,
                    "concludedValue": base.name,
                    "methods": [
                        {
                            "technique": method,
                            "confidence": confidence,
                            "value": base.summary or base.found,
                        }
                    ],
                }
            ]
        }
    props = [
        _prop("source", "hub" if base.hub else "folder"),
        _prop("relation:declared", base.relation),
        _prop("relation:found", base.found or "not established"),
    ]
    if base.log10_p is not None:
        props.append(_prop("pValue", "0" if base.exact else _p_text(base.log10_p)))
        props.append(_prop("log10P", "-inf" if base.exact else f"{base.log10_p:.6g}"))
    if base.summary:
        props.append(_prop("evidence", base.summary))
    out["properties"] = props
    return out


def _p_text(log10_p: float) -> str:
    """p from its log10, without underflowing to 0 (p < 1e-308 is common for copies)."""
    if log10_p > -300:
        return f"{10**log10_p:.3g}"
    exp = math.floor(log10_p)
    return f"{10 ** (log10_p - exp):.3g}e{exp}"


def _confidence(base: BaseLineage) -> float | None:
    """1 - p, p corrected for every test: the confidence that the weights derive from the base
    (an exact match is certain; an `independent` verdict has a large p and a low confidence)."""
    if base.exact:
        return 1.0
    if base.log10_p is None:
        return None
    return round(max(0.0, min(1.0, 1.0 - 10**base.log10_p)), 6)


def _licenses(text: str | None, name: str | None = None, link: str | None = None) -> list[Any]:
    """A license declaration as CycloneDX licenses: one SPDX id as `id`, a compound SPDX
    expression as `expression`, else each id by `id` or `name` (Hub ids such as `llama2`; the
    manifest's license_name and license_link describe an `other`)."""
    if not text:
        return []
    from gate import licenses

    parsed = licenses.parse(text)
    if parsed.tree is None:
        return [{"license": {"name": _cap(text)}}]
    spdx = _spdx(text)
    if spdx is not None:
        single = re.fullmatch(r"[A-Za-z0-9.+-]+", spdx)
        return [{"license": {"id": spdx}}] if single else [{"expression": spdx}]
    out: list[Any] = []
    for key in dict.fromkeys(parsed.ids):
        one = _spdx(key)
        if one is not None:
            out.append({"license": {"id": one}})
            continue
        entry: dict[str, str] = {"name": name if key == "other" and name else key}
        if key == "other" and link:
            entry["url"] = link
        out.append({"license": entry})
    return out


def _spdx(text: str) -> str | None:
    """The canonical SPDX expression of text, or None when any id in it is not SPDX's."""
    from license_expression import get_spdx_licensing

    licensing = get_spdx_licensing()
    try:
        expr = licensing.parse(text, validate=False)
    except Exception:  # the library raises several types; parse() above accepted the text
        return None
    if expr is None or licensing.unknown_license_keys(expr):
        return None
    return str(expr)


def _model_card(front: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The card's front matter and config.json fields that CycloneDX's modelCard holds."""
    params: dict[str, Any] = {}
    if isinstance(front.get("pipeline_tag"), str):
        params["task"] = _cap(front["pipeline_tag"])
    if isinstance(config.get("model_type"), str):
        params["architectureFamily"] = _cap(config["model_type"])
    architectures = _strings(config.get("architectures"))
    if architectures:
        params["modelArchitecture"] = architectures[0]
    datasets = _strings(front.get("datasets"))
    if datasets:
        params["datasets"] = [{"type": "dataset", "name": d} for d in datasets]
    card: dict[str, Any] = {}
    if params:
        card["modelParameters"] = params
    metrics = _metrics(front.get("model-index"))
    if metrics:
        card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    props = [
        _prop(f"card:{key}", value)
        for key in ("library_name", "language")
        for value in _strings(front.get(key))
    ]
    if props:
        card["properties"] = props
    return card


def _metrics(index: Any) -> list[dict[str, str]]:
    """model-index results -> performance metrics: type, value, and the dataset (and split) as
    the slice."""
    out: list[dict[str, str]] = []
    for entry in index if isinstance(index, list) else []:
        results = entry.get("results") if isinstance(entry, dict) else None
        for result in results if isinstance(results, list) else []:
            if not isinstance(result, dict):
                continue
            data = result.get("dataset")
            data = data if isinstance(data, dict) else {}
            where = " ".join(
                str(data[k]) for k in ("name", "split") if isinstance(data.get(k), (str, int))
            )
            metrics = result.get("metrics")
            for m in metrics if isinstance(metrics, list) else []:
                if not isinstance(m, dict) or not isinstance(m.get("type"), str):
                    continue
                if isinstance(m.get("value"), bool) or not isinstance(
                    m.get("value"), (int, float, str)
                ):
                    continue
                metric = {"type": _cap(m["type"]), "value": _cap(str(m["value"]))}
                if where:
                    metric["slice"] = _cap(where)
                out.append(metric)
                if len(out) >= MAX_LIST:
                    return out
    return out


def _front_matter(report: Report) -> dict[str, Any]:
    if not report.card:
        return {}
    from gate import card

    found = card.read(report.root, report.card)
    return found.data if found is not None else {}


def _config(root: str) -> dict[str, Any]:
    """config.json at the repository's root: bounded, and any problem is no config."""
    real, problem = paths.resolve_inside(root, "config.json")
    if problem is not None or not os.path.isfile(real):
        return {}
    try:
        with paths.open_regular(real) as f:
            data = paths.read_capped(f, MAX_CONFIG_BYTES)
        doc = json.loads(data) if len(data) <= MAX_CONFIG_BYTES else None
    except (OSError, ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _strings(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [_cap(v) for v in items if isinstance(v, str) and v][:MAX_LIST]


def _cap(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _prop(name: str, value: str) -> dict[str, str]:
    return {"name": f"{NS}:{name}", "value": value}


class CyclonedxReporter:
    spec = "1.6"

    def __init__(self, options: ReporterOptions) -> None:
        self.options = options

    def render(self, report: Report) -> str:
        return json.dumps(bom(report, self.spec), indent=2) + "\n"  # ASCII: lone surrogates escaped


class Cyclonedx17Reporter(CyclonedxReporter):
    spec = "1.7"
