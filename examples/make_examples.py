"""Regenerate the bundled examples (deterministic: same bytes on every run).

    python examples/make_examples.py [OUT_DIR]     # default: examples/

Needs numpy and safetensors (the `test` extra). The story: `public-base` is a public model;
`homegrown` claims to be trained from scratch but ships public-base's tensors under new
names; `honest` really was initialised independently. Both repositories keep a local copy of
the known public model and list it in policy.lineage.references.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "vocab_size": 128,
    "torch_dtype": "float16",
}
REFERENCE = "known-models/public-base"


def llama_tensors(seed: int) -> dict[str, np.ndarray]:
    """A tiny Llama-shaped checkpoint with random (seeded) weights and unit norms."""
    rng = np.random.default_rng(seed)
    h, i, v = CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG["vocab_size"]

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float16)

    out = {"model.embed_tokens.weight": w(v, h)}
    for n in range(CONFIG["num_hidden_layers"]):
        p = f"model.layers.{n}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[p + f"self_attn.{name}.weight"] = w(h, h)
        out[p + "mlp.gate_proj.weight"] = w(i, h)
        out[p + "mlp.up_proj.weight"] = w(i, h)
        out[p + "mlp.down_proj.weight"] = w(h, i)
        out[p + "input_layernorm.weight"] = np.ones(h, np.float16)
        out[p + "post_attention_layernorm.weight"] = np.ones(h, np.float16)
    out["model.norm.weight"] = np.ones(h, np.float16)
    out["lm_head.weight"] = w(v, h)
    return out


def rebrand(name: str) -> str:
    """The homegrown model's own naming scheme, hiding where its tensors came from."""
    for old, new in (
        ("model.embed_tokens", "tok_embeddings"),
        ("model.layers.", "blocks."),
        ("self_attn.q_proj", "attn.wq"),
        ("self_attn.k_proj", "attn.wk"),
        ("self_attn.v_proj", "attn.wv"),
        ("self_attn.o_proj", "attn.wo"),
        ("mlp.gate_proj", "ffn.w1"),
        ("mlp.down_proj", "ffn.w2"),
        ("mlp.up_proj", "ffn.w3"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("model.norm", "norm"),
        ("lm_head", "output"),
    ):
        name = name.replace(old, new)
    return name


def card(title: str, body: str) -> str:
    return f"---\nlicense: apache-2.0\nlanguage: [pt, en]\n---\n# {title}\n\n{body}\n"


MANIFEST = """\
# provenance.yaml: what this repository declares about its weights.
# Checked in CI by `provenance-gate check`; digests written by `provenance-gate lock`.
version: 1
model:
  name: {name}
  license: apache-2.0
  origin: scratch        # "trained from scratch": the gate tests this against the weights
artifacts:
  - path: model.safetensors
policy:
  allowed_formats: [safetensors]
  lineage:
    # Known public models this one must be independent of (kept locally for the check).
    references: [{reference}]
"""


def write_repo(root: str, name: str, tensors: dict[str, np.ndarray], body: str) -> None:
    os.makedirs(os.path.join(root, REFERENCE), exist_ok=True)
    save_file(tensors, os.path.join(root, "model.safetensors"), metadata={"format": "pt"})
    save_file(
        llama_tensors(seed=1234),
        os.path.join(root, REFERENCE, "model.safetensors"),
        metadata={"format": "pt"},
    )
    with open(os.path.join(root, REFERENCE, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    with open(os.path.join(root, "README.md"), "w") as f:
        f.write(card(name, body))
    with open(os.path.join(root, "provenance.yaml"), "w") as f:
        f.write(MANIFEST.format(name=name, reference=REFERENCE))


def main(out: str) -> None:
    from gate import checks, init_lock

    public = llama_tensors(seed=1234)
    stolen = {rebrand(k): public[k] for k in reversed(list(public))}
    repos = {
        "homegrown": (stolen, "Our homegrown model, trained from scratch on our own data."),
        "honest": (llama_tensors(seed=99), "Trained from scratch (independent initialisation)."),
    }
    for name, (tensors, body) in repos.items():
        root = os.path.join(out, name)
        shutil.rmtree(root, ignore_errors=True)
        write_repo(root, name, tensors, body)
        outcome = init_lock.lock(checks.Target.resolve(root, None))
        assert not outcome.report.findings, outcome.report.findings


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else HERE)
