"""The tiny model zoo the lineage tests and `bench/lineage_accuracy.py` run on.

Built on CPU with torch + transformers from `corpus.txt`: several base models of one architecture
(Llama) trained with the same data and hyper-parameters but different seeds (the hardest
negatives), a second family (GPT-2), and for each base the derivatives a provenance gate must
recognise. Every model is a folder with `model.safetensors` (or `model.gguf`, or an adapter),
`config.json` and `tokenizer.json`; `zoo.json` records the ground truth.

The zoo is cached under a key made from this file's source and corpus, so it is rebuilt only when
the generator changes. Merge formulas follow their papers: linear averaging (Wortsman et al.
2022), SLERP as in mergekit, task arithmetic (Ilharco et al. 2023), TIES (Yadav et al. 2023:
trim, elect sign, disjoint mean) and DARE (Yu et al. 2024: drop and rescale).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus.txt"
HIDDEN, INTER, LAYERS, HEADS, KV_HEADS = 64, 192, 4, 4, 2
GPT2_LAYERS = 3
VOCAB = 384


# Training runs on one thread with deterministic kernels: the same source, corpus and library
# versions give bit-identical models however many cores the machine has (more threads change the
# order of float reductions, and on a many-core machine they mostly fight over tiny matrices).
THREADS = 1
PROGRESS_EVERY = 5.0  # seconds


def key() -> str:
    """The cache key: this file, the packers, the corpus and the versions of the libraries that
    train, export and pack."""
    from importlib.metadata import version

    libraries = ("torch", "transformers", "tokenizers", "onnx", "onnxscript", "onnxruntime",
                 "bitsandbytes", "mlx")  # fmt: skip
    versions = " ".join(f"{d}={version(d)}" for d in libraries)
    sources = Path(__file__).read_bytes() + (HERE / "packings.py").read_bytes()
    h = hashlib.sha256(sources + CORPUS.read_bytes() + versions.encode())
    return h.hexdigest()[:16]


def default_root() -> Path:
    base = os.environ.get("PROVENANCE_GATE_ZOO_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "provenance-gate-zoo"
    )
    return Path(base) / key()


def ensure(
    root: Path | None = None,
    llama_bases: int = 4,
    gpt2_bases: int = 2,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Build the zoo once (atomically: a half-built zoo is never used) and return its folder.
    progress: told about each model as it is saved (default: a line on standard error)."""
    root = root or default_root()
    done = root / f"zoo-{llama_bases}-{gpt2_bases}.json"
    if done.is_file():
        return root
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    say(f"zoo: building {llama_bases} llama and {gpt2_bases} gpt2 bases with their derivatives"
        f" in {root} (once per generator version; about a minute on 2 cores)")  # fmt: skip
    with warnings.catch_warnings():  # library chatter while training is not the gate's concern
        warnings.simplefilter("ignore")
        truth = _Builder(tmp, say).build(llama_bases, gpt2_bases)
    (tmp / done.name).write_text(json.dumps(truth, indent=1, sort_keys=True))
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists():  # another size of the zoo, or a concurrent builder: merge ours in
        for entry in tmp.iterdir():
            if not (root / entry.name).exists():
                os.replace(entry, root / entry.name)
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, root)
    return root


# One base as the zoo re-publishes it: safetensors (the base itself), torch, GGUF, ONNX (fp32,
# fp16, names stripped, ONNX Runtime's int8 and 4-bit) and the 4-bit safetensors packings. Any
# two are the same model: `copy` when both are full precision, else `quantized`.
CROSS_FORMATS = ("", ".torch", ".gguf-q8_0", ".gguf-q4_0", ".onnx", ".onnx-fp16", ".onnx-anon",
                 ".onnx-int8", ".onnx-int8-pc", ".onnx-nbits4", ".gptq", ".awq", ".nf4", ".mlx")  # fmt: skip


def cross_expected(truth: dict[str, Any], a: str, b: str) -> str:
    """The relation two forms of one base have (either way round)."""
    quantized = "quantized" in (truth[a]["relation"], truth[b]["relation"])
    return "quantized" if quantized else "copy"


def truth(root: Path) -> dict[str, Any]:
    files = sorted(root.glob("zoo-*.json"))
    return json.loads(files[-1].read_text())["models"]  # type: ignore[no-any-return]


class _Builder:
    def __init__(self, out: Path, say: Callable[[str], None] = lambda line: None) -> None:
        import torch
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        torch.set_num_threads(THREADS)
        torch.use_deterministic_algorithms(True)
        self.torch = torch
        self.out = out
        self.say, self.started = say, time.monotonic()
        self.said = self.started
        out.mkdir(parents=True)
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(
            vocab_size=VOCAB,
            special_tokens=["<unk>", "<s>", "</s>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        text = CORPUS.read_text(encoding="utf-8")
        tok.train_from_iterator(text.splitlines(), trainer)
        self.tokenizer = tok
        self.vocab = tok.get_vocab_size()
        lines = text.splitlines()
        self.data = torch.tensor(tok.encode(text).ids)
        self.data_pt = torch.tensor(tok.encode("\n".join(lines[20:])).ids)  # fine-tune domain
        self.data_en = torch.tensor(tok.encode("\n".join(lines[:20])).ids)
        self.models: dict[str, dict[str, Any]] = {}

    # ----------------------------------------------------------------- models and training
    def llama(self, seed: int, vocab: int | None = None) -> Any:
        from transformers import LlamaConfig, LlamaForCausalLM

        self.torch.manual_seed(seed)
        cfg = LlamaConfig(
            vocab_size=vocab or self.vocab,
            hidden_size=HIDDEN,
            intermediate_size=INTER,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            max_position_embeddings=128,
            tie_word_embeddings=False,
        )
        return LlamaForCausalLM(cfg)

    def gpt2(self, seed: int) -> Any:
        from transformers import GPT2Config, GPT2LMHeadModel

        self.torch.manual_seed(seed)
        cfg = GPT2Config(
            vocab_size=self.vocab, n_embd=HIDDEN, n_layer=GPT2_LAYERS, n_head=HEADS, n_positions=128
        )
        return GPT2LMHeadModel(cfg)

    def train(self, model: Any, steps: int, lr: float, seed: int, data: Any = None) -> Any:
        torch = self.torch
        data = self.data if data is None else data
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        model.train()
        for _ in range(steps):
            starts = torch.randint(0, len(data) - 33, (8,), generator=gen)
            batch = torch.stack([data[s : s + 32] for s in starts])
            loss = model(input_ids=batch, labels=batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        return model

    def clone(self, name: str) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.out / name)

    def logits(self, model: Any) -> Any:
        with self.torch.no_grad():
            return model(input_ids=self.data[:48].unsqueeze(0)).logits[0]

    # ----------------------------------------------------------------- saving
    def save(self, name: str, model: Any, **truth: Any) -> None:
        path = self.out / name
        model.save_pretrained(path, safe_serialization=True)
        for extra in ("generation_config.json",):
            (path / extra).unlink(missing_ok=True)
        self.save_tokenizer(path)
        self.saved(name, truth)

    def saved(self, name: str, truth: dict[str, Any]) -> None:
        self.models[name] = truth
        now = time.monotonic()
        if now - self.said >= PROGRESS_EVERY:  # a line every few seconds, not one per model
            self.said = now
            self.say(f"zoo: {len(self.models):3d} models after {now - self.started:3.0f} s"
                     f" (last: {name})")  # fmt: skip

    def save_tokenizer(self, path: Path, tok: Any = None) -> None:
        (tok or self.tokenizer).save(str(path / "tokenizer.json"))

    def beside(self, name: str, like: str) -> Path:
        """A new model folder holding another model's config and tokenizer."""
        path = self.out / name
        path.mkdir()
        for f in ("config.json", "tokenizer.json"):
            shutil.copy(self.out / like / f, path / f)
        return path

    def save_state(self, name: str, like: str, state: dict[str, Any], **truth: Any) -> None:
        """Save raw tensors next to a copy of another model's config and tokenizer."""
        from safetensors.torch import save_file

        path = self.beside(name, like)
        save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
        self.saved(name, truth)

    def state(self, name: str) -> dict[str, Any]:
        from safetensors.torch import load_file

        return load_file(str(self.out / name / "model.safetensors"))

    # ----------------------------------------------------------------- the zoo
    def build(self, llama_bases: int, gpt2_bases: int) -> dict[str, Any]:
        llamas = [f"llama-s{i}" for i in range(llama_bases)]
        for i, name in enumerate(llamas):
            self.save(
                name,
                self.train(self.llama(100 + i), 150, 3e-3, i),
                family="llama",
                base=name,
                relation="base",
            )
        gpts = [f"gpt2-s{i}" for i in range(gpt2_bases)]
        for i, name in enumerate(gpts):
            self.save(
                name,
                self.train(self.gpt2(200 + i), 150, 3e-3, i),
                family="gpt2",
                base=name,
                relation="base",
            )
        for i, name in enumerate(llamas):
            self.derive(name, llamas[(i + 1) % len(llamas)], "llama", full=True)
        for i, name in enumerate(gpts):
            self.derive(name, gpts[(i + 1) % len(gpts)], "gpt2", full=False)
        return {"models": self.models, "key": key()}

    def derive(self, base: str, other: str, family: str, full: bool) -> None:
        torch = self.torch
        t = {"family": family, "base": base}
        state = self.state(base)
        self.save_state(f"{base}.copy", base, state, relation="copy", **t)
        renamed = {"net." + k.split(".", 1)[1] if "." in k else k: v for k, v in state.items()}
        self.save_sharded(f"{base}.renamed", base, renamed, relation="copy", **t)
        self.save_state(
            f"{base}.bf16",
            base,
            {k: v.to(torch.bfloat16) for k, v in state.items()},
            relation="copy",
            detail="dtype cast to bf16",
            **t,
        )
        self.save_state(
            f"{base}.fp16",
            base,
            {k: v.to(torch.float16) for k, v in state.items()},
            relation="copy",
            detail="dtype cast to fp16",
            **t,
        )
        self.save(
            f"{base}.ft-short",
            self.train(self.clone(base), 20, 1e-4, 7, self.data_pt),
            relation="finetune",
            detail="20 steps, lr 1e-4",
            **t,
        )
        self.save(
            f"{base}.ft-long",
            self.train(self.clone(base), 300, 3e-3, 8, self.data_pt),
            relation="finetune",
            detail="300 steps, lr 3e-3",
            **t,
        )
        self.save(
            f"{base}.cpt",
            self.train(self.clone(base), 200, 1e-3, 9),
            relation="finetune",
            detail="continued pre-training, 200 steps",
            **t,
        )
        self.lora(base, t)
        self.merges(base, other, t)
        if not full:
            return
        self.quantize(base, t)
        self.int8(base, t)
        self.prune(base, t)
        self.expand_vocab(base, t)
        self.attacks(base, t)
        self.passthrough(base, other, t)
        self.formats(base, t)
        self.siblings(base, t)

    def formats(self, base: str, t: dict[str, Any]) -> None:
        """The formats models are re-published in: an ONNX export of the short fine-tune
        (torch.onnx's default exporter: anonymous, transposed weights named by their module
        scopes), the base as ONNX (onnx_formats) and as a torch checkpoint, and 4-bit packings
        of the base (GPTQ with act-order, AWQ GEMM, bitsandbytes NF4 with nested statistics,
        MLX), each beside the base's config and tokenizer."""
        import numpy as np
        from safetensors.numpy import save_file

        from tests.zoo import packings

        source = f"{base}.ft-short"
        path = self.beside(f"{base}.onnx-ft", source)
        _export_onnx(self.torch, self.clone(source), path / "model.onnx", self.data[:16][None])
        self.saved(path.name, {"relation": "finetune", "format": "onnx", **t})
        self.onnx_formats(base, t)
        path = self.beside(f"{base}.torch", base)
        self.torch.save(self.state(base), path / "pytorch_model.bin")
        self.saved(path.name, {"relation": "copy", "format": "torch", **t})
        state = {k: v.float().numpy() for k, v in self.state(base).items()}
        for kind in ("gptq", "awq", "nf4", "mlx"):
            tensors, extra = packings.checkpoint(kind, state)
            path = self.beside(f"{base}.{kind}", base)
            config = json.loads((path / "config.json").read_text())
            (path / "config.json").write_text(json.dumps(config | extra, indent=1))
            save_file(
                {k: np.ascontiguousarray(v) for k, v in tensors.items()},
                str(path / "model.safetensors"),
            )
            self.saved(path.name, {"relation": "quantized", "format": kind, **t})

    def siblings(self, base: str, t: dict[str, Any]) -> None:
        """Pairs that share this base as their ancestor and derive not from each other (truth:
        `sibling_of`; against the base each is a derivation): different layers kept, then
        healed; different 75% subsets of the vocabulary kept (the tokenizer re-indexed), then
        trained apart (noise of a short fine-tune's size); and a second continued
        pre-training beside `.cpt`, with another seed."""
        torch = self.torch
        names = {tag: f"{base}.sib-layers-{tag}" for tag in "ab"}
        for (tag, keep), seed in zip((("a", [0, 1]), ("b", [2, 3])), (31, 32), strict=True):
            model = self.clone(base)
            model.model.layers = torch.nn.ModuleList([model.model.layers[i] for i in keep])
            model.config.num_hidden_layers = len(keep)
            for i, layer in enumerate(model.model.layers):
                layer.self_attn.layer_idx = i
            self.save(
                names[tag],
                self.train(model, 60, 1e-3, seed),
                relation="pruned",
                layer_map=keep,
                sibling_of=names["b" if tag == "a" else "a"],
                detail="layers kept, then healed 60 steps",
                **t,
            )
        vocab = json.loads(self.tokenizer.to_str())
        tokens = sorted(vocab["model"]["vocab"], key=vocab["model"]["vocab"].get)
        special = {a["content"] for a in vocab.get("added_tokens") or []}
        state = self.state(base)
        for tag, seed in (("a", 41), ("b", 42)):
            gen = torch.Generator().manual_seed(seed)
            keep = sorted(
                [i for i, w in enumerate(tokens) if w in special]
                + torch.randperm(len(tokens), generator=gen).tolist()[: len(tokens) * 3 // 4]
            )
            keep = sorted(set(keep))
            kept = {k: v.clone() for k, v in state.items()}
            for k in ("model.embed_tokens.weight", "lm_head.weight"):
                kept[k] = kept[k][keep]
            for k, v in kept.items():
                kept[k] = v + 0.02 * torch.randn(v.shape, generator=gen) * v.std()
            name = f"{base}.sib-vocab-{tag}"
            self.save_state(name, base, kept, relation="pruned", **t,
                            sibling_of=f"{base}.sib-vocab-{'b' if tag == 'a' else 'a'}",
                            detail=f"vocabulary {len(tokens)} -> {len(keep)} tokens")  # fmt: skip
            pruned = dict(vocab)
            words = [tokens[i] for i in keep]
            pruned["model"] = dict(vocab["model"], vocab={w: i for i, w in enumerate(words)})
            known = set(words)
            pairs = [m if isinstance(m, list) else m.split(" ") for m in vocab["model"]["merges"]]
            pruned["model"]["merges"] = [  # a merge needs both parts and its result
                m for m in pairs if {*m, "".join(m)} <= known
            ]
            pruned["added_tokens"] = [
                dict(a, id=words.index(a["content"])) for a in vocab.get("added_tokens") or []
            ]
            (self.out / name / "tokenizer.json").write_text(json.dumps(pruned))
            config = json.loads((self.out / name / "config.json").read_text())
            (self.out / name / "config.json").write_text(
                json.dumps(config | {"vocab_size": len(keep)}, indent=1)
            )
        self.save(
            f"{base}.cpt-b",
            self.train(self.clone(base), 200, 1e-3, 10),
            relation="finetune",
            detail="continued pre-training, 200 steps, another seed",
            sibling_of=f"{base}.cpt",
            **t,
        )

    def onnx_formats(self, base: str, t: dict[str, Any]) -> None:
        """The base as ONNX: exported (fp32, fp16), with its node names and metadata stripped
        as graph optimisers leave it (roles from topology), and quantized by ONNX Runtime's
        tools (dynamic int8 per tensor and per channel, MatMulNBits 4-bit)."""
        import logging

        import onnx
        from onnxruntime import quantization

        root = logging.getLogger()
        kept = root.handlers[:], root.level
        # its module calls logging.basicConfig(level=INFO) on import: every later INFO line
        # (gguf's writer, the exporter's passes) would reach the build's output
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        root.handlers[:], root.level = kept[0], kept[1]

        def folder(kind: str) -> Path:
            return self.beside(f"{base}.{kind}", base)

        ids = self.data[:16][None]
        source = folder("onnx") / "model.onnx"
        _export_onnx(self.torch, self.clone(base), source, ids)
        self.saved(source.parent.name, {"relation": "copy", "format": "onnx", **t})
        _export_onnx(self.torch, self.clone(base).half(), folder("onnx-fp16") / "model.onnx", ids)
        self.saved(f"{base}.onnx-fp16", {"relation": "copy", "format": "onnx-fp16", **t})
        stripped = onnx.load(str(source))
        for node in stripped.graph.node:
            node.name = ""
            del node.metadata_props[:]
        onnx.save_model(stripped, str(folder("onnx-anon") / "model.onnx"))
        self.saved(f"{base}.onnx-anon", {"relation": "copy", "format": "onnx-anon", **t})
        logging.disable(logging.WARNING)  # ONNX Runtime's "consider pre-processing" advice
        try:
            for kind, per_channel in (("onnx-int8", False), ("onnx-int8-pc", True)):
                quantization.quantize_dynamic(
                    str(source),
                    str(folder(kind) / "model.onnx"),
                    weight_type=quantization.QuantType.QInt8,
                    per_channel=per_channel,
                )
                self.saved(f"{base}.{kind}", {"relation": "quantized", "format": kind, **t})
            quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), block_size=32)
            quantizer.process()
            onnx.save_model(quantizer.model.model, str(folder("onnx-nbits4") / "model.onnx"))
            self.saved(
                f"{base}.onnx-nbits4", {"relation": "quantized", "format": "onnx-nbits4", **t}
            )
        finally:
            logging.disable(logging.NOTSET)

    def save_sharded(self, name: str, like: str, state: dict[str, Any], **truth: Any) -> None:
        from safetensors.torch import save_file

        path = self.beside(name, like)
        keys = sorted(state)
        half = len(keys) // 2
        weight_map = {}
        for n, part in enumerate((keys[:half], keys[half:]), 1):
            fname = f"model-{n:05d}-of-00002.safetensors"
            save_file({k: state[k].contiguous() for k in part}, str(path / fname))
            weight_map.update(dict.fromkeys(part, fname))
        index = {"metadata": {}, "weight_map": weight_map}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
        self.saved(name, truth)

    def lora(self, base: str, t: dict[str, Any]) -> None:
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "v_proj", "up_proj"] if t["family"] == "llama" else ["c_attn"]
        cfg = LoraConfig(
            r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, init_lora_weights=True
        )
        self.torch.manual_seed(11)
        peft_model = get_peft_model(self.clone(base), cfg)
        self.train(peft_model, 80, 3e-3, 11, self.data_pt)
        path = self.out / f"{base}.lora-adapter"
        peft_model.save_pretrained(path, safe_serialization=True)
        self.save_tokenizer(path)
        cfg_json = json.loads((path / "adapter_config.json").read_text())
        cfg_json["base_model_name_or_path"] = base
        (path / "adapter_config.json").write_text(json.dumps(cfg_json, indent=1))
        self.saved(f"{base}.lora-adapter", {"relation": "adapter", "rank": 4, **t})
        self.save(
            f"{base}.lora-merged",
            peft_model.merge_and_unload(),
            relation="finetune",
            detail="merged LoRA",
            rank=4,
            **t,
        )

    def merges(self, base: str, other: str, t: dict[str, Any]) -> None:
        torch = self.torch
        a, b = self.state(base), self.state(other)
        parents = {"parents": [base, other], "relation": "merge"}
        self.save_state(
            f"{base}.merge-linear",
            base,
            {k: 0.6 * a[k] + 0.4 * b[k] for k in a},
            method="linear",
            weights=[0.6, 0.4],
            **parents,
            **t,
        )
        self.save_state(
            f"{base}.merge-slerp",
            base,
            {k: slerp(torch, 0.3, a[k], b[k]) for k in a},
            method="slerp",
            t=0.3,
            **parents,
            **t,
        )
        ft1, ft2 = self.state(f"{base}.ft-long"), self.state(f"{base}.cpt")
        tv = {k: (ft1[k] - a[k], ft2[k] - a[k]) for k in a}
        self.save_state(
            f"{base}.task-arith",
            base,
            {k: a[k] + 0.7 * tv[k][0] for k in a},
            relation="finetune",
            detail="task arithmetic, lambda 0.7",
            **t,
        )
        merged = {"relation": "merge", "parents": [base]}
        self.save_state(
            f"{base}.ties",
            base,
            {k: a[k] + ties(torch, tv[k]) for k in a},
            method="ties",
            **merged,
            **t,
        )
        gen = torch.Generator().manual_seed(5)
        self.save_state(
            f"{base}.dare",
            base,
            {k: a[k] + dare(torch, tv[k], gen) for k in a},
            method="dare",
            **merged,
            **t,
        )

    def quantize(self, base: str, t: dict[str, Any]) -> None:
        import gguf

        state = self.state(base)
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, LAYERS)
        for qname, qtype in (
            ("q8_0", gguf.GGMLQuantizationType.Q8_0),
            ("q4_0", gguf.GGMLQuantizationType.Q4_0),
        ):
            path = self.out / f"{base}.gguf-{qname}"
            path.mkdir()
            writer = gguf.GGUFWriter(str(path / "model.gguf"), "llama")
            writer.add_block_count(LAYERS)
            for k, v in state.items():
                arr = v.float().numpy()
                if k.endswith(("q_proj.weight", "k_proj.weight")):  # as llama.cpp's converter
                    heads = HEADS if "q_proj" in k else KV_HEADS
                    arr = (
                        arr.reshape(heads, 2, arr.shape[0] // heads // 2, *arr.shape[1:])
                        .swapaxes(1, 2)
                        .reshape(arr.shape)
                    )
                gname = names.get_name(k, try_suffixes=(".weight", ".bias"))
                if arr.ndim == 2:
                    writer.add_tensor(gname, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
                else:
                    writer.add_tensor(gname, arr)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
            self.saved(path.name, {"relation": "quantized", "qtype": qname.upper(), **t})

    def int8(self, base: str, t: dict[str, Any]) -> None:
        """LLM.int8() as bitsandbytes stores it: int8 rows and their absolute maxima (SCB) for
        every linear layer (embeddings and the head stay in full precision, as bnb leaves them)."""
        torch = self.torch
        out = {}
        for k, v in self.state(base).items():
            if v.ndim == 2 and ".layers." in k:
                absmax = v.abs().amax(dim=1).clamp(min=1e-12)
                out[k] = torch.round(v / absmax[:, None] * 127).to(torch.int8)
                out[k[: -len("weight")] + "SCB"] = absmax.float()
            else:
                out[k] = v
        self.save_state(f"{base}.int8", base, out, relation="quantized", qtype="INT8", **t)

    def prune(self, base: str, t: dict[str, Any]) -> None:
        from transformers import AutoModelForCausalLM

        keep = list(range(0, LAYERS, 2))
        model = self.clone(base)
        model.model.layers = self.torch.nn.ModuleList([model.model.layers[i] for i in keep])
        model.config.num_hidden_layers = len(keep)
        for i, layer in enumerate(model.model.layers):
            layer.self_attn.layer_idx = i
        self.save(f"{base}.depth-pruned", model, relation="pruned", layer_map=keep, **t)
        healed = self.train(
            AutoModelForCausalLM.from_pretrained(self.out / f"{base}.depth-pruned"), 100, 1e-3, 12
        )
        self.save(
            f"{base}.depth-pruned-healed",
            healed,
            relation="pruned",
            layer_map=keep,
            detail="healed 100 steps",
            **t,
        )
        model = self.clone(base)
        width = INTER * 2 // 3
        for layer in model.model.layers:
            mlp = layer.mlp
            score = mlp.down_proj.weight.norm(dim=0) * mlp.up_proj.weight.norm(dim=1)
            idx = score.argsort(descending=True)[:width].sort().values
            for lin, dim in ((mlp.gate_proj, 0), (mlp.up_proj, 0), (mlp.down_proj, 1)):
                lin.weight = self.torch.nn.Parameter(lin.weight.index_select(dim, idx).clone())
        model.config.intermediate_size = width
        self.save(f"{base}.width-pruned", model, relation="pruned", width=width, **t)
        healed = self.train(
            AutoModelForCausalLM.from_pretrained(self.out / f"{base}.width-pruned"), 100, 1e-3, 13
        )
        self.save(
            f"{base}.width-pruned-healed",
            healed,
            relation="pruned",
            width=width,
            detail="healed 100 steps",
            **t,
        )

    def expand_vocab(self, base: str, t: dict[str, Any]) -> None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(self.tokenizer.to_str())
        added = tok.add_tokens([f"<extra_{i}>" for i in range(32)])
        model = self.clone(base)
        model.resize_token_embeddings(self.vocab + added, mean_resizing=True)
        self.train(model, 50, 1e-3, 14, self.data_pt)
        path = self.out / f"{base}.vocab-expanded"
        model.save_pretrained(path, safe_serialization=True)
        (path / "generation_config.json").unlink(missing_ok=True)
        self.save_tokenizer(path, tok)
        self.saved(path.name, {"relation": "finetune", "detail": f"{added} tokens added", **t})

    def attacks(self, base: str, t: dict[str, Any]) -> None:
        """Function-preserving transforms; each must leave the logits unchanged."""
        torch = self.torch
        ref = self.logits(self.clone(base))
        gen = torch.Generator().manual_seed(21)
        hd = HIDDEN // HEADS
        for kind in ("permuted", "scaled", "rotated", "all-attacks"):
            model = self.clone(base)
            sd = {k: v.clone() for k, v in model.state_dict().items()}
            if kind in ("permuted", "all-attacks"):
                for i in range(LAYERS):
                    p = f"model.layers.{i}."
                    perm = torch.randperm(INTER, generator=gen)
                    for n in ("mlp.gate_proj", "mlp.up_proj"):
                        sd[p + n + ".weight"] = sd[p + n + ".weight"][perm]
                    sd[p + "mlp.down_proj.weight"] = sd[p + "mlp.down_proj.weight"][:, perm]
                    # permute key/value head groups together with their query heads
                    gperm = torch.randperm(KV_HEADS, generator=gen)
                    per = HEADS // KV_HEADS
                    qh = torch.cat([torch.arange(g * per, (g + 1) * per) for g in gperm])
                    rows = functools.partial(head_rows, torch, hd)
                    sd[p + "self_attn.q_proj.weight"] = sd[p + "self_attn.q_proj.weight"][rows(qh)]
                    for n in ("k_proj", "v_proj"):
                        sd[p + f"self_attn.{n}.weight"] = sd[p + f"self_attn.{n}.weight"][
                            rows(gperm)
                        ]
                    o = sd[p + "self_attn.o_proj.weight"]
                    sd[p + "self_attn.o_proj.weight"] = o[:, rows(qh)]
            if kind in ("scaled", "all-attacks"):
                for i in range(LAYERS):
                    p = f"model.layers.{i}.mlp."
                    s = torch.exp(torch.randn(INTER, generator=gen))
                    s = s * torch.where(torch.rand(INTER, generator=gen) < 0.5, -1.0, 1.0)
                    sd[p + "up_proj.weight"] = sd[p + "up_proj.weight"] * s[:, None]
                    sd[p + "down_proj.weight"] = sd[p + "down_proj.weight"] / s[None, :]
            if kind in ("rotated", "all-attacks"):
                q, _ = torch.linalg.qr(torch.randn(HIDDEN, HIDDEN, generator=gen))
                rotate(sd, q, LAYERS)
            model.load_state_dict(sd)
            out = self.logits(model)
            if not torch.allclose(out, ref, atol=1e-3, rtol=1e-3):
                raise AssertionError(f"{kind}: logits changed by {(out - ref).abs().max()}")
            self.save(
                f"{base}.{kind}",
                model,
                relation="copy",
                detail=f"{kind} (function-preserving)",
                **t,
            )

    def passthrough(self, base: str, other: str, t: dict[str, Any]) -> None:
        a, b = self.state(base), self.state(other)
        half = LAYERS // 2
        layer_map = [[base, i] for i in range(half)] + [[other, i] for i in range(half, LAYERS)]
        out = {}
        for k in a:
            parts = k.split(".")
            if len(parts) > 3 and parts[1] == "layers":
                src = a if int(parts[2]) < half else b
                out[k] = src[k]
            else:
                out[k] = a[k]
        self.save_state(
            f"{base}.passthrough",
            base,
            out,
            relation="merge",
            method="passthrough",
            parents=[base, other],
            layer_map=layer_map,
            **t,
        )


def _export_onnx(torch: Any, model: Any, path: Path, ids: Any) -> None:
    """torch.onnx's default (dynamo) exporter, as a user exporting logits would run it."""
    import contextlib
    import io
    import logging

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed"

    class Logits(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, x: Any) -> Any:
            return self.m(input_ids=x, use_cache=False).logits

    # the exporter's passes log at INFO, and ONNX Runtime's quantizer configures the root
    # logger on import: silenced for the export only
    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            torch.onnx.export(Logits().eval(), (ids,), str(path), dynamo=True)
    finally:
        logging.disable(logging.NOTSET)


def head_rows(torch: Any, hd: int, heads: Any) -> Any:
    """Row indices of the given attention heads (hd rows each)."""
    return torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in heads])


def slerp(torch: Any, t: float, a: Any, b: Any) -> Any:
    """Spherical interpolation of two tensors as mergekit does (angle of the normalised vectors)."""
    af, bf = a.flatten().double(), b.flatten().double()
    dot = torch.clamp((af / af.norm()) @ (bf / bf.norm()), -1.0, 1.0)
    if abs(float(dot)) > 0.9995:
        return ((1 - t) * a.double() + t * b.double()).to(a.dtype)
    theta = torch.arccos(dot)
    s = torch.sin(theta)
    out = torch.sin((1 - t) * theta) / s * a.double() + torch.sin(t * theta) / s * b.double()
    return out.to(a.dtype)


def ties(torch: Any, tvs: tuple[Any, ...], density: float = 0.3) -> Any:
    trimmed = []
    for tv in tvs:
        k = max(1, int(tv.numel() * density))
        thresh = tv.abs().flatten().kthvalue(tv.numel() - k + 1).values
        trimmed.append(torch.where(tv.abs() >= thresh, tv, torch.zeros_like(tv)))
    stack = torch.stack(trimmed)
    sign = torch.sign(stack.sum(0))
    agree = (torch.sign(stack) == sign) & (stack != 0)
    total = (stack * agree).sum(0)
    count = agree.sum(0).clamp(min=1)
    return total / count


def dare(torch: Any, tvs: tuple[Any, ...], gen: Any, p: float = 0.9) -> Any:
    out = torch.zeros_like(tvs[0])
    for tv in tvs:
        keep = torch.rand(tv.shape, generator=gen) >= p
        out = out + tv * keep / (1 - p)
    return out / len(tvs)


def rotate(sd: dict[str, Any], q: Any, layers: int) -> None:
    """Rotate the residual stream by the orthogonal q, folding RMSNorm weights into the next
    linear layers first (RMSNorm commutes with a rotation only when it has no weight)."""
    sd["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"] @ q
    for i in range(layers):
        p = f"model.layers.{i}."
        for norm, readers in (
            ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
            ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
        ):
            g = sd[p + norm + ".weight"]
            for r in readers:
                sd[p + r + ".weight"] = (sd[p + r + ".weight"] * g[None, :]) @ q
            sd[p + norm + ".weight"] = sd[p + norm + ".weight"] * 0 + 1
        for w in ("self_attn.o_proj", "mlp.down_proj"):
            sd[p + w + ".weight"] = q.T @ sd[p + w + ".weight"]
    g = sd["model.norm.weight"]
    sd["lm_head.weight"] = (sd["lm_head.weight"] * g[None, :]) @ q
    sd["model.norm.weight"] = g * 0 + 1


if __name__ == "__main__":
    print(ensure(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
