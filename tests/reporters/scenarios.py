"""Two model repositories for the supply-chain reports' golden documents (docs/examples/): one
passing and one failing, each with a base in a local folder and a base on the (in-memory) Hub,
a model card and a config.json, so every field the reports map is exercised."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from gate import checks
from gate.findings import Report
from tests.fakehub import FakeHub
from tests.helpers import artifact_yaml, write_st


def weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {"model.embed_tokens.weight": rng.standard_normal((64, 32)).astype(np.float32)}
    for n in range(2):
        up = rng.standard_normal((64, 32)).astype(np.float32)
        out[f"model.layers.{n}.mlp.up_proj.weight"] = up
        out[f"model.layers.{n}.self_attn.q_proj.weight"] = rng.standard_normal((32, 32)).astype(
            np.float32
        )
    return out


CARD = """\
---
license: {license}
base_model: {hub_base}
base_model_relation: {relation}
pipeline_tag: text-generation
library_name: transformers
tags: [demo]
datasets: [acme/corpus]
model-index:
- name: acme/tiny
  results:
  - task: {{type: text-generation}}
    dataset: {{name: acme/eval, type: acme/eval, split: test}}
    metrics:
    - {{type: accuracy, value: 0.42}}
---
# acme/tiny
"""


def build(root: Path, passing: bool, hub: FakeHub) -> Path:
    """passing: a 50/50 merge of the folder `base` and the Hub's acme/base, declared as such
    (Apache-2.0). Failing (llama2, a Hub license id): declared a fine-tune of `base` and of
    acme/other, but the weights are `base` bit for bit, and independent of acme/other."""
    local, remote = weights(1), weights(3)
    if passing:
        rng = np.random.default_rng(9)
        mine = {
            k: 0.5 * v + 0.5 * remote[k] + 0.01 * rng.standard_normal(v.shape).astype(np.float32)
            for k, v in local.items()
        }
    else:
        mine = dict(local)
    write_st(root / "model.safetensors", mine)
    write_st(root / "base" / "model.safetensors", local)
    shas = {
        "acme/base": hub.add("acme/base", {"model.safetensors": save(remote)}),
        "acme/other": hub.add("acme/other", {"model.safetensors": save(weights(2))}),
    }
    hub_base = "acme/base" if passing else "acme/other"
    license_ = "apache-2.0" if passing else "llama2"
    relation = "merge" if passing else "finetune"
    (root / "config.json").write_text(
        json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    card = CARD.format(license=license_, hub_base=hub_base, relation=relation)
    (root / "README.md").write_text(card)
    declared = f"{relation}\n    weight: 0.5" if passing else relation
    head = f"version: 1\nmodel:\n  name: acme/tiny\n  license: {license_}\n  origin: derived\n"
    bases = (
        f"base_models:\n  - path: base\n    relation: {declared}\n    license: {license_}\n"
        f'  - id: {hub_base}\n    revision: "{shas[hub_base]}"\n    relation: {declared}\n'
        f"    license: {license_}\n"
    )
    files = artifact_yaml(root, "model.safetensors", "config.json")
    (root / "provenance.yaml").write_text(head + bases + files)
    return root


def report(root: Path, passing: bool) -> Report:
    hub = FakeHub()
    build(root, passing, hub)
    target = checks.Target.resolve(str(root), None)
    return checks.check(target, checks.Options(), None, lambda: hub)
