"""The architecture zoo: tiny *trained* models of the families people fine-tune most, beyond the
Llama and GPT-2 of build.py, with the derivatives whose relation a gate must name on each.

Families (transformers configs, hidden size 64, 3 layers per stack): BERT and RoBERTa encoders
(post-LN, learned positions, token types; masked-LM), T5 (encoder-decoder, relative attention
bias, untied head), ViT (patches, class token; image classification), Whisper (convolutional
audio encoder with fixed sinusoidal positions, decoder; speech-to-text on synthetic features),
Qwen2 (q/k/v biases, grouped-query attention), Gemma (norm offset, tied embeddings, GQA), Phi
(partial rotary, parallel block, biases) and Mixtral (routed experts).

Per family, two bases trained alike from two seeds (the hardest negatives), and for each base:
- `.ft`: fine-tuned on another domain (finetune);
- `.permuted`: attention heads (key/value groups with their queries), feed-forward units and
  routed experts re-ordered (copy): the logits are asserted unchanged when it is built;
- `.permuted-fp16`: that copy cast to fp16 (copy: only the matching tests see it, as no value
  is equal any more);
- `.scaled-fp16`: re-ordered, then each value dimension and each gated or ReLU feed-forward unit
  scaled (sign too where the function allows) with the inverse on the output side, then cast
  (copy);
- `.residual-fp16`: the residual stream's axis re-ordered as well (LayerNorm and RMSNorm commute
  with it), then cast to fp16 (copy: the map is fitted on the token embeddings, so a ViT, which
  has none, is left out);
- `.vocab-permuted`: the same tokens under new ids, every token-indexed row moved with its
  token and the tokenizer re-indexed (copy; not for ViT);
- `.int8`: every linear layer as LLM.int8() stores it (quantized);
- `.ft-permuted`: the fine-tune, permuted the same way (finetune);
- `.pruned`: the middle layer of every stack dropped, then healed by training (pruned, layer
  map [0, 2]).

Cached like the main zoo, under a key of this file, build.py (which it reuses), the corpus and
the library versions; `ensure()` builds it once (about a minute on 2 cores).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.zoo import build

HIDDEN, INTER, LAYERS, HEADS, KV, EXPERTS = 64, 128, 3, 4, 2, 4
HD = HIDDEN // HEADS
STEPS, FT_STEPS, HEAL_STEPS = 120, 40, 40
IMAGE, PATCH, CLASSES = 16, 4, 4
MELS, FRAMES = 16, 64  # Whisper input: mel bins x frames (two frames per encoder position)
# a stack's layer index in a module path ('encoder.layer.3.', 'decoder.block.3.', 'layers.3.')
_STACK_INDEX = re.compile(r"\.(?:layer|layers|block)\.\d+\.")


def key() -> str:
    h = hashlib.sha256(build.key().encode() + Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def default_root() -> Path:
    return build.default_root().parent / f"archs-{key()}"


def ensure(root: Path | None = None, progress: Callable[[str], None] | None = None) -> Path:
    """Build the architecture zoo once (atomically) and return its folder."""
    root = root or default_root()
    done = root / "archs.json"
    if done.is_file():
        return root
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    say(f"zoo: building the architecture zoo ({len(FAMILIES)} families) in {root}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        builder = _Archs(tmp, say)
        models = builder.build()
    (tmp / done.name).write_text(json.dumps({"models": models, "key": key()}, indent=1))
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists():  # a concurrent builder finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, root)
    return root


def truth(root: Path) -> dict[str, Any]:
    return json.loads((root / "archs.json").read_text())["models"]  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- families
@dataclasses.dataclass(frozen=True)
class Attention:
    """One attention block's tensors (module path templates with {i}, the layer): query, key,
    value and output projections; kv < heads for grouped-query attention. Head order is a
    symmetry: queries move with their key/value group, the output's columns with the queries."""

    q: str
    k: str
    v: str
    o: str
    kv: int = HEADS
    bias: tuple[str, ...] = ()  # which of q, k, v carry biases
    extra: tuple[tuple[str, int], ...] = ()  # other tensors indexed by head: (template, axis)


@dataclasses.dataclass(frozen=True)
class Ffn:
    """A feed-forward block: `up` tensors hold one row per unit (bias entries too), `down` one
    column per unit. Unit order is a symmetry (the activation is element-wise)."""

    up: tuple[str, ...]
    down: str
    # the up tensor a unit's output is linear in, whose rows may be scaled (with the down
    # tensor's columns divided): a gated unit's `up` (any sign), a ReLU's input (positive only)
    linear: str = ""
    signed: bool = True


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    task: str  # "causal", "masked", "seq2seq", "image", "speech"
    stacks: tuple[str, ...]  # module path of each stack's layer list, with {i}
    attention: tuple[Attention, ...]
    ffn: tuple[Ffn, ...]
    experts: str = ""  # path of a layer's experts ('...experts.{e}.'), with {i} and {e}
    router: str = ""  # the router's weight (one row per expert), with {i}
    shared_heads: bool = False  # one head order for every layer of a stack (T5: layer 0 holds
    # the relative position bias every layer of its stack adds)


def _llama_attention(p: str, kv: int = KV, bias: tuple[str, ...] = ()) -> Attention:
    a = p + "self_attn."
    return Attention(a + "q_proj", a + "k_proj", a + "v_proj", a + "o_proj", kv, bias)


def _encoder(name: str, task: str, p: str, a: str) -> Family:
    """A BERT-style encoder: layers at p, self-attention's query/key/value under a."""
    return Family(
        name,
        task,
        (p,),
        (
            Attention(
                a + "query",
                a + "key",
                a + "value",
                p + "attention.output.dense",
                bias=("q", "k", "v"),
            ),
        ),
        (Ffn((p + "intermediate.dense",), p + "output.dense"),),
    )


def _bert(stem: str) -> Family:
    p = stem + ".encoder.layer.{i}."
    return _encoder(stem, "masked", p, p + "attention.self.")


def _t5() -> Family:
    e, d = "encoder.block.{i}.", "decoder.block.{i}."

    def att(p: str, kind: str) -> Attention:
        rel = (
            ((p + f"layer.0.{kind}.relative_attention_bias", 1),) if kind == "SelfAttention" else ()
        )
        base = f"{p}layer.{0 if kind == 'SelfAttention' else 1}.{kind}."
        return Attention(base + "q", base + "k", base + "v", base + "o", extra=rel)

    return Family(
        "t5",
        "seq2seq",
        (e, d),
        (att(e, "SelfAttention"), att(d, "SelfAttention"), att(d, "EncDecAttention")),
        (
            Ffn(
                (e + "layer.1.DenseReluDense.wi",),
                e + "layer.1.DenseReluDense.wo",
                e + "layer.1.DenseReluDense.wi",
                signed=False,
            ),
            Ffn(
                (d + "layer.2.DenseReluDense.wi",),
                d + "layer.2.DenseReluDense.wo",
                d + "layer.2.DenseReluDense.wi",
                signed=False,
            ),
        ),
        shared_heads=True,
    )


def _whisper() -> Family:
    e, d = "model.encoder.layers.{i}.", "model.decoder.layers.{i}."

    def att(p: str) -> Attention:
        return Attention(p + "q_proj", p + "k_proj", p + "v_proj", p + "out_proj",
                         bias=("q", "v"))  # fmt: skip

    return Family(
        "whisper",
        "speech",
        (e, d),
        (att(e + "self_attn."), att(d + "self_attn."), att(d + "encoder_attn.")),
        (Ffn((e + "fc1",), e + "fc2"), Ffn((d + "fc1",), d + "fc2")),
    )


def _vit() -> Family:
    p = "vit.encoder.layer.{i}."
    return _encoder("vit", "image", p, p + "attention.attention.")


_L = "model.layers.{i}."
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        _bert("bert"),
        _bert("roberta"),
        _t5(),
        _vit(),
        _whisper(),
        Family("qwen2", "causal", (_L,), (_llama_attention(_L, bias=("q", "k", "v")),),
               (Ffn((_L + "mlp.gate_proj", _L + "mlp.up_proj"), _L + "mlp.down_proj",
                    _L + "mlp.up_proj"),)),
        Family("gemma", "causal", (_L,), (_llama_attention(_L),),
               (Ffn((_L + "mlp.gate_proj", _L + "mlp.up_proj"), _L + "mlp.down_proj",
                    _L + "mlp.up_proj"),)),
        Family("phi", "causal", (_L,),
               (Attention(_L + "self_attn.q_proj", _L + "self_attn.k_proj",
                          _L + "self_attn.v_proj", _L + "self_attn.dense",
                          bias=("q", "k", "v")),),
               (Ffn((_L + "mlp.fc1",), _L + "mlp.fc2"),)),
        Family("mixtral", "causal", (_L,), (_llama_attention(_L),),
               (Ffn((_L + "block_sparse_moe.experts.{e}.w1", _L + "block_sparse_moe.experts.{e}.w3"),
                    _L + "block_sparse_moe.experts.{e}.w2", _L + "block_sparse_moe.experts.{e}.w3"),),
               experts=_L + "block_sparse_moe.experts.{e}.",
               router=_L + "block_sparse_moe.gate.weight"),
    )
}  # fmt: skip


def config(family: str, layers: int = LAYERS) -> Any:
    """The tiny transformers config of a family."""
    import transformers as tf

    vocab = build.VOCAB
    common = {"vocab_size": vocab, "hidden_size": HIDDEN, "intermediate_size": INTER,
              "num_hidden_layers": layers, "num_attention_heads": HEADS}  # fmt: skip
    decoder = {**common, "num_key_value_heads": KV, "max_position_embeddings": 128}
    if family in ("bert", "roberta"):
        cls = tf.BertConfig if family == "bert" else tf.RobertaConfig
        extra = {"pad_token_id": 1} if family == "roberta" else {}
        return cls(**common, max_position_embeddings=66, **extra)
    if family == "t5":
        return tf.T5Config(vocab_size=vocab, d_model=HIDDEN, d_kv=HD, d_ff=INTER,
                           num_layers=layers, num_heads=HEADS, tie_word_embeddings=False,
                           pad_token_id=0, decoder_start_token_id=0)  # fmt: skip
    if family == "vit":
        return tf.ViTConfig(hidden_size=HIDDEN, num_hidden_layers=layers,
                            num_attention_heads=HEADS, intermediate_size=INTER, image_size=IMAGE,
                            patch_size=PATCH, num_labels=CLASSES)  # fmt: skip
    if family == "whisper":
        return tf.WhisperConfig(vocab_size=vocab, d_model=HIDDEN, encoder_layers=layers,
                                decoder_layers=layers, encoder_attention_heads=HEADS,
                                decoder_attention_heads=HEADS, encoder_ffn_dim=INTER,
                                decoder_ffn_dim=INTER, num_mel_bins=MELS,
                                max_source_positions=FRAMES // 2, max_target_positions=64,
                                pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                decoder_start_token_id=1)  # fmt: skip
    if family == "qwen2":
        return tf.Qwen2Config(**decoder, tie_word_embeddings=False)
    if family == "gemma":
        return tf.GemmaConfig(**decoder, head_dim=HD)
    if family == "phi":
        return tf.PhiConfig(**{**common, "max_position_embeddings": 128},
                            partial_rotary_factor=0.5)  # fmt: skip
    if family == "mixtral":
        return tf.MixtralConfig(**decoder, num_local_experts=EXPERTS, num_experts_per_tok=2,
                                tie_word_embeddings=False)  # fmt: skip
    raise KeyError(family)


def model_class(family: str) -> Any:
    import transformers as tf

    return {
        "bert": tf.BertForMaskedLM,
        "roberta": tf.RobertaForMaskedLM,
        "t5": tf.T5ForConditionalGeneration,
        "vit": tf.ViTForImageClassification,
        "whisper": tf.WhisperForConditionalGeneration,
        "qwen2": tf.Qwen2ForCausalLM,
        "gemma": tf.GemmaForCausalLM,
        "phi": tf.PhiForCausalLM,
        "mixtral": tf.MixtralForCausalLM,
    }[family]


# ----------------------------------------------------------------------------- symmetries
def permute(torch: Any, sd: dict[str, Any], family: Family, gen: Any) -> dict[str, Any]:
    """A function-preserving re-ordering of heads, feed-forward units and experts, in place
    of a copy of the state dict (keys without the model's own prefix differences)."""
    sd = dict(sd)
    layers = _layers(sd, family)
    for stack, n in layers.items():
        for att in family.attention:
            if not att.q.startswith(stack):
                continue
            # T5: one order for the stack, as its first layer's position bias serves them all
            shared = torch.randperm(att.kv, generator=gen) if family.shared_heads else None
            for i in range(n):
                order = shared if shared is not None else torch.randperm(att.kv, generator=gen)
                _heads(torch, sd, att, i, order)
        for ffn in family.ffn:
            if not ffn.down.startswith(stack):
                continue
            for i in range(n):
                for e in range(EXPERTS if family.experts else 1):
                    perm = torch.randperm(INTER, generator=gen)
                    for name in ffn.up:
                        _take(sd, name.format(i=i, e=e), perm, 0)
                    _take(sd, ffn.down.format(i=i, e=e), perm, 1)
        if family.experts:
            for i in range(n):
                _experts(torch, sd, family, i, torch.randperm(EXPERTS, generator=gen))
    return sd


def scale(torch: Any, sd: dict[str, Any], family: Family, gen: Any) -> dict[str, Any]:
    """Per-unit scales the function does not see: each value dimension (with its bias) times a
    factor and the output projection's matching columns divided by it (attention is linear in
    its values); each unit of a gated or ReLU feed-forward block likewise, through the tensor
    the unit's output is linear in (a ReLU's only by positive factors)."""

    def factors(n: int, signed: bool) -> Any:
        f = torch.exp(0.5 * torch.randn(n, generator=gen))
        return f * torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if signed else f

    sd = dict(sd)
    for stack, n in _layers(sd, family).items():
        for i in range(n):
            for att in (a for a in family.attention if a.q.startswith(stack)):
                f = factors(att.kv * HD, True)
                v = att.v.format(i=i)
                sd[v + ".weight"] = sd[v + ".weight"] * f[:, None]
                if "v" in att.bias:
                    sd[v + ".bias"] = sd[v + ".bias"] * f
                per = HEADS // att.kv  # each query head reads its key/value group's values
                cols = torch.cat([f[(h // per) * HD : (h // per + 1) * HD] for h in range(HEADS)])
                o = att.o.format(i=i) + ".weight"
                sd[o] = sd[o] / cols[None, :]
            for ffn in (f for f in family.ffn if f.linear and f.down.startswith(stack)):
                for e in range(EXPERTS if family.experts else 1):
                    f = factors(INTER, ffn.signed)
                    up, down = ffn.linear.format(i=i, e=e), ffn.down.format(i=i, e=e)
                    sd[up + ".weight"] = sd[up + ".weight"] * f[:, None]
                    sd[down + ".weight"] = sd[down + ".weight"] / f[None, :]
    return sd


def residual(torch: Any, sd: dict[str, Any], family: Family, gen: Any) -> dict[str, Any]:
    """The residual stream's axis re-ordered by one permutation everywhere: every axis of
    width HIDDEN, except the ones in a head's or a feed-forward unit's space (the rows the
    attention and feed-forward inputs write, the columns their outputs read) and the
    position axis of position tables. LayerNorm and RMSNorm commute with it, so the function
    is kept (asserted by the caller)."""
    perm = torch.randperm(HIDDEN, generator=gen)
    inner: set[tuple[str, int]] = set()  # (tensor, axis) in a head's or unit's space
    for stack, n in _layers(sd, family).items():
        for i in range(n):
            for e in range(EXPERTS if family.experts else 1):
                for att in family.attention:
                    if att.q.startswith(stack):
                        for name in (att.q, att.k, att.v):
                            inner |= {(name.format(i=i) + ".weight", 0),
                                      (name.format(i=i) + ".bias", 0)}  # fmt: skip
                        inner.add((att.o.format(i=i) + ".weight", 1))
                for ffn in family.ffn:
                    if ffn.down.startswith(stack):
                        for name in ffn.up:
                            inner |= {(name.format(i=i, e=e) + ".weight", 0),
                                      (name.format(i=i, e=e) + ".bias", 0)}  # fmt: skip
                        inner.add((ffn.down.format(i=i, e=e) + ".weight", 1))
    out = {}
    for name, v in sd.items():
        for axis, width in enumerate(v.shape):
            positional = axis == 0 and "position" in name
            if width == HIDDEN and (name, axis) not in inner and not positional:
                v = v.index_select(axis, perm)
        out[name] = v
    return out


def _layers(sd: dict[str, Any], family: Family) -> dict[str, int]:
    out = {}
    for stack in family.stacks:
        prefix = stack.split("{i}")[0]
        found = {k[len(prefix) :].split(".", 1)[0] for k in sd if k.startswith(prefix)}
        out[stack] = len([x for x in found if x.isdigit()])
    return out


def _take(sd: dict[str, Any], module: str, idx: Any, axis: int) -> None:
    """Re-order a module's weight along axis by idx (and its bias, when axis is the output)."""
    sd[module + ".weight"] = sd[module + ".weight"].index_select(axis, idx)
    if axis == 0 and module + ".bias" in sd:
        sd[module + ".bias"] = sd[module + ".bias"].index_select(0, idx)


def _heads(torch: Any, sd: dict[str, Any], att: Attention, i: int, groups: Any) -> None:
    per = HEADS // att.kv
    heads = torch.cat([torch.arange(g * per, (g + 1) * per) for g in groups])
    q_rows, kv_rows = build.head_rows(torch, HD, heads), build.head_rows(torch, HD, groups)
    for which, rows in (("q", q_rows), ("k", kv_rows), ("v", kv_rows)):
        name = getattr(att, which).format(i=i)
        sd[name + ".weight"] = sd[name + ".weight"][rows]
        if which in att.bias:
            sd[name + ".bias"] = sd[name + ".bias"][rows]
    o = att.o.format(i=i) + ".weight"
    sd[o] = sd[o][:, q_rows]
    for template, axis in att.extra:
        name = template.format(i=i) + ".weight"
        if name in sd:
            sd[name] = sd[name].index_select(axis, heads)


def _experts(torch: Any, sd: dict[str, Any], family: Family, i: int, order: Any) -> None:
    """Expert e of the result is expert order[e] of the source; the router's rows move along."""
    old = {e: family.experts.format(i=i, e=e) for e in range(EXPERTS)}
    moved = {}
    for e in range(EXPERTS):
        src = old[int(order[e])]
        for k in [k for k in sd if k.startswith(src)]:
            moved[old[e] + k[len(src) :]] = sd[k]
    sd.update(moved)
    router = family.router.format(i=i)
    sd[router] = sd[router][order]


def drop_layer(sd: dict[str, Any], family: Family, layer: int) -> dict[str, Any]:
    """The state dict with one layer of every stack removed and the later ones renumbered."""
    out = {}
    for k, v in sd.items():
        stack = next((s.split("{i}")[0] for s in family.stacks if k.startswith(s.split("{i}")[0])),
                     None)  # fmt: skip
        if stack is None:
            out[k] = v
            continue
        n, rest = k[len(stack) :].split(".", 1)
        if int(n) != layer:
            out[f"{stack}{int(n) - (int(n) > layer)}.{rest}"] = v
    return out


# ----------------------------------------------------------------------------- building
class _Archs(build._Builder):
    def build(self) -> dict[str, Any]:  # type: ignore[override]
        for family in FAMILIES:
            for s in range(2):
                base = f"{family}-s{s}"
                model = self.fresh(family, 300 + 10 * list(FAMILIES).index(family) + s)
                self.fit(model, family, STEPS, 3e-3, s)
                self.save(base, model, family=family, base=base, relation="base")
            for s in range(2):
                self.derivatives(family, f"{family}-s{s}")
        return self.models

    def fresh(self, family: str, seed: int, layers: int = LAYERS) -> Any:
        self.torch.manual_seed(seed)
        return model_class(family)(config(family, layers))

    def reload(self, family: str, name: str) -> Any:
        return model_class(family).from_pretrained(self.out / name)

    def batch(self, family: str, gen: Any, domain: int) -> dict[str, Any]:
        """One training batch of the family's task (domain 1: the fine-tuning data)."""
        torch = self.torch
        task = FAMILIES[family].task
        if task == "image":
            x = torch.randn(8, 3, IMAGE, IMAGE, generator=gen)
            half = x[:, :, : IMAGE // 2] if domain else x[:, :1]
            labels = (half.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 1].mean(dim=(1, 2)) > 0)
            return {"pixel_values": x, "labels": labels.long()}
        data = self.data_pt if domain else self.data
        starts = torch.randint(0, len(data) - 33, (8,), generator=gen)
        ids = torch.stack([data[s : s + 32] for s in starts])
        if task == "causal":
            return {"input_ids": ids, "labels": ids}
        if task == "masked":
            mask = torch.rand(ids.shape, generator=gen) < 0.15
            return {"input_ids": ids.masked_fill(mask, 0), "labels": ids.masked_fill(~mask, -100)}
        if task == "seq2seq":
            return {"input_ids": ids[:, :16].contiguous(), "labels": ids[:, 16:].contiguous()}
        # speech: features whose frames carry the tokens to transcribe (a learnable map)
        feats = torch.randn(8, MELS, FRAMES, generator=gen) * 0.1
        feats[:, :, : ids.shape[1]] += (
            ids[:, None, :] % MELS == torch.arange(MELS)[:, None]
        ).float()
        return {"input_features": feats, "labels": ids[:, :16].contiguous()}

    def fit(self, model: Any, family: str, steps: int, lr: float, seed: int,
            domain: int = 0) -> Any:  # fmt: skip
        torch = self.torch
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        for _ in range(steps):
            loss = model(**self.batch(family, gen, domain)).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        return model

    def outputs(self, family: str, model: Any, ids: Any = None) -> Any:
        """The model's logits on a fixed batch; with ids (a vocabulary's new index of each old
        token id), on the same text re-indexed, and read back in the old order."""
        batch = self.batch(family, self.torch.Generator().manual_seed(99), 0)
        if ids is not None:
            for k in ("input_ids", "labels"):
                if k in batch:
                    batch[k] = self.torch.where(batch[k] >= 0, ids[batch[k].clamp(min=0)], batch[k])
        with self.torch.no_grad():
            logits = model(**batch).logits
        return logits if ids is None else logits[..., ids]

    def int8(self, family: str, source: str, name: str, **truth: Any) -> None:
        """LLM.int8() as bitsandbytes stores it: every linear layer's weight as int8 rows with
        their absolute maxima (SCB); embeddings, position biases and norms stay as they were."""
        torch = self.torch
        out = {}
        for k, v in self.state(source).items():
            linear = v.ndim == 2 and k.endswith(".weight") and _STACK_INDEX.search(k)
            if linear and "relative_attention_bias" not in k:
                absmax = v.abs().amax(dim=1).clamp(min=1e-12)
                out[k] = torch.round(v / absmax[:, None] * 127).to(torch.int8)
                out[k[: -len("weight")] + "SCB"] = absmax.float()
            else:
                out[k] = v
        self.save_state(name, source, out, family=family, **truth)

    def vocabulary_permuted(self, family: str, source: str, name: str, **truth: Any) -> None:
        """The same tokens under new ids (the special tokens keep theirs, as the config names
        them): the tokenizer's vocabulary re-indexed and every token-indexed row moved with its
        token; the logits on the same text asserted equal, token by token."""
        torch = self.torch
        vocab = build.VOCAB
        ids = torch.cat(
            [
                torch.arange(3),
                3 + torch.randperm(vocab - 3, generator=torch.Generator().manual_seed(34)),
            ]
        )
        back = torch.argsort(ids)  # row new_id of the result is row back[new_id] of the source
        sd = {k: v[back] if v.shape[:1] == (vocab,) else v for k, v in self.state(source).items()}
        self.save_state(name, source, sd, family=family, **truth)
        path = self.out / name / "tokenizer.json"
        tok = json.loads(path.read_text())
        tok["model"]["vocab"] = {t: int(ids[i]) for t, i in tok["model"]["vocab"].items()}
        path.write_text(json.dumps(tok))
        before = self.outputs(family, self.reload(family, source))
        after = self.outputs(family, self.reload(family, name), ids)
        if not torch.allclose(before, after, atol=1e-4, rtol=1e-4):
            raise AssertionError(f"{family}: re-indexing the vocabulary changed the outputs by"
                                 f" {(before - after).abs().max()}")  # fmt: skip

    def save(self, name: str, model: Any, **truth: Any) -> None:
        super().save(name, model, **truth)
        if FAMILIES[truth["family"]].task == "image":  # a ViT has no tokenizer
            (self.out / name / "tokenizer.json").unlink()

    def beside(self, name: str, like: str) -> Path:
        path = self.out / name
        path.mkdir()
        for f in ("config.json", "tokenizer.json"):
            if (self.out / like / f).exists():
                shutil.copy(self.out / like / f, path / f)
        return path

    def disguised(self, family: str, source: str, name: str, seed: int, **truth: Any) -> None:
        """The source checkpoint with heads, units and experts re-ordered, as stored (the
        module names on disk); the outputs of the saved model asserted equal to the source's."""
        torch = self.torch
        state = self.state(source)
        sd = permute(torch, state, FAMILIES[family], torch.Generator().manual_seed(seed))
        if all(torch.equal(v, state[k]) for k, v in sd.items()):
            raise AssertionError(f"{family}: nothing was re-ordered")
        self.save_state(name, source, sd, family=family, **truth)
        before = self.outputs(family, self.reload(family, source))
        after = self.outputs(family, self.reload(family, name))
        if not torch.allclose(before, after, atol=1e-4, rtol=1e-4):
            raise AssertionError(f"{family}: re-ordering changed the outputs by"
                                 f" {(before - after).abs().max()}")  # fmt: skip

    def transformed(self, family: str, source: str, name: str, how: str, **truth: Any) -> None:
        """The source re-ordered (heads, units, experts), then per-unit scaled (`scaled`) or
        with the residual stream re-ordered too (`residual`), then cast to fp16: the outputs
        asserted equal (before the cast) to the source's."""
        from safetensors.torch import save_file

        torch = self.torch
        fam = FAMILIES[family]
        gen = torch.Generator().manual_seed(33)
        sd = permute(torch, self.state(source), fam, gen)
        sd = scale(torch, sd, fam, gen) if how == "scaled" else residual(torch, sd, fam, gen)
        self.save_state(name, source, sd, family=family, **truth)
        before = self.outputs(family, self.reload(family, source))
        after = self.outputs(family, self.reload(family, name))
        if not torch.allclose(before, after, atol=1e-4, rtol=1e-4):
            raise AssertionError(f"{family}: {how} changed the outputs by"
                                 f" {(before - after).abs().max()}")  # fmt: skip
        save_file({k: v.half() for k, v in sd.items()}, str(self.out / name / "model.safetensors"))

    def derivatives(self, family: str, base: str) -> None:
        from safetensors.torch import save_file

        t = {"base": base}
        ft = self.fit(self.reload(family, base), family, FT_STEPS, 1e-3, 7, domain=1)
        self.save(f"{base}.ft", ft, relation="finetune", detail=f"{FT_STEPS} steps", family=family,
                  **t)  # fmt: skip
        self.disguised(family, base, f"{base}.permuted", 31, relation="copy",
                       detail="heads, units and experts re-ordered (function-preserving)", **t)  # fmt: skip
        half = {k: v.half() for k, v in self.state(f"{base}.permuted").items()}
        self.save_state(f"{base}.permuted-fp16", base, half, relation="copy", family=family,
                        detail="re-ordered, then cast to fp16", **t)  # fmt: skip
        self.transformed(family, base, f"{base}.scaled-fp16", "scaled", relation="copy",
                         detail="units re-ordered and scaled, fp16", **t)  # fmt: skip
        self.int8(family, base, f"{base}.int8", relation="quantized", detail="LLM.int8()", **t)
        if FAMILIES[family].task != "image":  # a vocabulary, and token embeddings to map on
            self.vocabulary_permuted(family, base, f"{base}.vocab-permuted", relation="copy",
                                     detail="the same tokens under new ids", **t)  # fmt: skip
            self.transformed(family, base, f"{base}.residual-fp16", "residual", relation="copy",
                             detail="units and the residual stream re-ordered, fp16", **t)  # fmt: skip
        self.disguised(family, f"{base}.ft", f"{base}.ft-permuted", 32, relation="finetune",
                       detail="fine-tuned, then re-ordered", **t)  # fmt: skip
        # the middle layer dropped as stored, then loaded with a config one layer shorter
        path = self.beside(f"{base}.dropped", base)
        config(family, LAYERS - 1).save_pretrained(path)
        sd = drop_layer(self.state(base), FAMILIES[family], 1)
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path / "model.safetensors"))
        pruned, info = model_class(family).from_pretrained(path, output_loading_info=True)
        if info["missing_keys"] or info["unexpected_keys"]:
            raise AssertionError(f"{family}: the pruned state does not fit: {info}")
        shutil.rmtree(path)
        self.fit(pruned, family, HEAL_STEPS, 1e-3, 8)
        self.save(f"{base}.pruned", pruned, relation="pruned", layer_map=[0, 2], family=family,
                  detail="middle layer of every stack dropped, healed", **t)  # fmt: skip


if __name__ == "__main__":
    print(ensure(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
