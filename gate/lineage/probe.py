"""Tier 4, functional: the logit probe (the `torch` extra: torch + transformers).

Both models run the same fixed, versioned prompts (gate/data/probes-v1.json, Portuguese
included); at every position where both tokenizations end at the same character of the prompt,
the next-token logits are compared over the tokens both vocabularies share (matched by token
string, so a model with a changed tokenizer is still comparable): cosine of the centred logits,
top-1 agreement and KL(reference || candidate). A raw logit cosine is high between unrelated
models that share a tokenizer and a corpus (0.76-0.80 between the zoo's independent seeds), so the
verdict is an empirical p-value against a table of the same statistic for independent models of
the same architecture (probe_calibration.json, from the test zoo), never a bare threshold; it
is reported beside the weight tiers and never convicts on its own.

Models are loaded with transformers from local folders, safetensors only, never with
trust_remote_code, one at a time (the candidate's outputs are kept, then the reference is
loaded); a reference's outputs are cached by its files' identity and the probe version.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gate import paths, pip_install, settings
from gate.errors import GateError

if TYPE_CHECKING:
    import numpy as np

PROBES = Path(__file__).resolve().parents[1] / "data" / "probes-v1.json"
CALIBRATION = Path(__file__).with_name("probe_calibration.json")
MAX_POSITIONS = 512  # tokens per prompt fed to a model
EXTRA_HINT = f"install the probe: pip install torch==<your build>, then {pip_install('torch')}"


class ProbeError(GateError):
    """A model the probe cannot run (no safetensors, no tokenizer, transformers refuses it)."""


@dataclasses.dataclass(frozen=True)
class PromptFigures:
    id: str
    lang: str
    positions: int  # aligned positions compared
    cosine: float  # mean cosine of centred logits
    top1: float  # share of positions with the same most likely token
    kl: float  # mean KL(reference || candidate), nats


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """The probe's figures for one candidate-reference pair and what they mean."""

    reference: str
    probe_version: int
    shared_vocabulary: int
    positions: int
    cosine: float
    top1: float
    kl: float
    prompts: tuple[PromptFigures, ...]
    null: dict[str, Any]  # the calibration the p-value comes from
    p_value: float | None  # None: no calibration for this architecture
    dependent: bool | None
    seconds: float

    def summary(self) -> str:
        p = "not calibrated" if self.p_value is None else f"empirical p = {self.p_value:.3g}"
        return (
            f"logit probe: centred cosine {self.cosine:.4f}, top-1 {self.top1:.3f}, KL"
            f" {self.kl:.4f} over {self.positions} positions; {p}"
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def available() -> bool:
    """torch, transformers and tokenizers are installed (found, not imported)."""
    return all(importlib.util.find_spec(m) for m in ("torch", "transformers", "tokenizers"))


@functools.cache
def prompts() -> tuple[int, tuple[dict[str, str], ...]]:
    data = json.loads(PROBES.read_text(encoding="utf-8"))
    return int(data["version"]), tuple(data["prompts"])


@functools.cache
def calibration() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CALIBRATION.read_text(encoding="utf-8"))
    return data


def empirical_p(
    arch: str, cosine: float, table: dict[str, Any] | None = None
) -> tuple[float | None, dict[str, Any]]:
    """(k + 1) / (n + 1), k of the n independent same-architecture pairs scoring at least this
    cosine: a valid p-value whatever the distribution, never below 1 / (n + 1)."""
    table = table if table is not None else calibration()
    null = table.get("null", {}).get(arch)
    if not null or not null.get("cosine"):
        return None, {"architecture": arch, "pairs": 0, "source": table.get("source")}
    values = null["cosine"]
    k = sum(1 for v in values if v >= cosine)
    info = {
        "architecture": arch,
        "pairs": len(values),
        "max_cosine": max(values),
        "mean_cosine": sum(values) / len(values),
        "source": table.get("source"),
        "probe_version": table.get("probe_version"),
    }
    return (k + 1) / (len(values) + 1), info


@dataclasses.dataclass
class Outputs:
    """One model's next-token logits at every position of every prompt."""

    vocab: dict[str, int]
    ends: list[list[int]]  # per prompt, the character offset each position ends at
    logits: list[np.ndarray]  # per prompt, [positions, vocabulary]
    arch: str


def run(
    candidate: str,
    references: Sequence[str],
    device: str = "cpu",
    alpha: float = 0.01,
    cache_dir: str | None = None,
) -> list[ProbeResult | str]:
    """The probe against each reference folder (a string: why it could not run)."""
    if not available():
        raise ProbeError("the logit probe needs torch and transformers", hint=EXTRA_HINT)
    start = time.perf_counter()
    cand = outputs(candidate, device)
    cand_seconds = time.perf_counter() - start
    out: list[ProbeResult | str] = []
    for ref in references:
        t0 = time.perf_counter()
        try:
            r = _cached_outputs(ref, device, cache_dir)
        except ProbeError as e:
            out.append(str(e))
            continue
        out.append(compare(cand, r, ref, alpha, cand_seconds + time.perf_counter() - t0))
    return out


def compare(
    c: Outputs,
    r: Outputs,
    ref: str,
    alpha: float,
    seconds: float = 0.0,
    table: dict[str, Any] | None = None,
) -> ProbeResult:
    """The figures for one pair of model outputs, and the p-value from `table` (default: the
    shipped calibration)."""
    import numpy as np

    width_c = max((x.shape[1] for x in c.logits if x.size), default=0)
    width_r = max((x.shape[1] for x in r.logits if x.size), default=0)
    shared = sorted(
        s for s in c.vocab.keys() & r.vocab.keys() if c.vocab[s] < width_c and r.vocab[s] < width_r
    )
    ic = np.array([c.vocab[s] for s in shared], dtype=np.int64)
    ir = np.array([r.vocab[s] for s in shared], dtype=np.int64)
    version, items = prompts()
    figures = []
    for k, item in enumerate(items):
        at_c = {e: i for i, e in enumerate(c.ends[k])}
        at_r = {e: i for i, e in enumerate(r.ends[k])}
        common = sorted(at_c.keys() & at_r.keys())
        if not common or not len(shared):
            figures.append(PromptFigures(item["id"], item["lang"], 0, 0.0, 0.0, 0.0))
            continue
        x = c.logits[k][[at_c[e] for e in common]][:, ic].astype(np.float64)
        y = r.logits[k][[at_r[e] for e in common]][:, ir].astype(np.float64)
        xc = x - x.mean(axis=1, keepdims=True)
        yc = y - y.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(xc, axis=1) * np.linalg.norm(yc, axis=1)
        cos = np.where(norms > 0, (xc * yc).sum(axis=1) / np.where(norms > 0, norms, 1), 0.0)
        top1 = x.argmax(axis=1) == y.argmax(axis=1)
        logp = y - np.logaddexp.reduce(y, axis=1, keepdims=True)
        logq = x - np.logaddexp.reduce(x, axis=1, keepdims=True)
        kl = (np.exp(logp) * (logp - logq)).sum(axis=1)
        figures.append(
            PromptFigures(
                item["id"],
                item["lang"],
                len(common),
                float(cos.mean()),
                float(top1.mean()),
                float(kl.mean()),
            )
        )
    n = sum(f.positions for f in figures)

    def mean(attr: str) -> float:
        return sum(getattr(f, attr) * f.positions for f in figures) / n if n else 0.0

    cosine = mean("cosine")
    p, null = (
        empirical_p(r.arch, cosine, table)
        if c.arch == r.arch
        else (None, {"architecture": f"{c.arch} vs {r.arch}", "pairs": 0})
    )
    return ProbeResult(
        reference=ref,
        probe_version=version,
        shared_vocabulary=len(shared),
        positions=n,
        cosine=round(cosine, 6),
        top1=round(mean("top1"), 6),
        kl=round(mean("kl"), 6),
        prompts=tuple(figures),
        null=null,
        p_value=p,
        dependent=None if p is None else p <= alpha,
        seconds=round(seconds, 2),
    )


def _cached_outputs(folder: str, device: str, cache_dir: str | None) -> Outputs:
    """A reference's outputs, kept on disk by its files' identity, the probe and the device."""
    import numpy as np

    key = _identity(folder, device)
    path = os.path.join(cache_dir or settings.default_cache_dir(), "probe", f"{key}.npz")
    try:
        with np.load(path, allow_pickle=False) as z:  # never unpickle, even our own cache
            meta = json.loads(str(z["meta"]))
            k = len(meta["ends"])
            return Outputs(
                meta["vocab"], meta["ends"], [z[f"l{i}"] for i in range(k)], meta["arch"]
            )
    except (OSError, KeyError, ValueError):
        pass
    out = outputs(folder, device)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        meta = json.dumps({"vocab": out.vocab, "ends": out.ends, "arch": out.arch})
        tmp = f"{path}.{os.getpid()}.npz"
        arrays: dict[str, Any] = {f"l{i}": x for i, x in enumerate(out.logits)}
        np.savez(tmp, meta=np.array(meta), **arrays)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache costs a rerun, never a failure
    return out


def _identity(folder: str, device: str) -> str:
    h = hashlib.sha256(f"{prompts()[0]}|{device}|".encode())
    for rel in paths.walk_files(folder):
        st = os.stat(os.path.join(folder, rel))
        h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}|".encode())
    return h.hexdigest()[:32]


def outputs(folder: str, device: str = "cpu") -> Outputs:
    """Load one model (safetensors, no remote code), run every prompt, release the model."""
    import numpy as np
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    if not os.path.isdir(folder):
        raise ProbeError(f"{folder}: the probe needs a model folder")
    if not any(f.endswith(".safetensors") for f in os.listdir(folder)):
        raise ProbeError(f"{folder}: no safetensors weights (the probe never loads pickles)")
    tok_file = os.path.join(folder, "tokenizer.json")
    if not os.path.isfile(tok_file):
        raise ProbeError(f"{folder}: no tokenizer.json")
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        tok = Tokenizer.from_file(tok_file)
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            folder,
            config=config,
            use_safetensors=True,
            trust_remote_code=False,
            local_files_only=True,
            dtype=torch.float32,
            output_loading_info=True,
        )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        why = f"{folder}: transformers cannot load it ({type(e).__name__}: {e})"
        raise ProbeError(why[:400]) from None
    model, info = loaded  # with output_loading_info: (model, what was missing or unexpected)
    # transformers fills weights it did not find with random values: such a model is not the
    # checkpoint, and its logits would be noise
    absent = list(info.get("missing_keys") or []) + list(info.get("mismatched_keys") or [])
    if absent:
        raise ProbeError(
            f"{folder}: {len(absent)} weight(s) of the {config.model_type} architecture are not"
            f" in the checkpoint (e.g. {absent[0]}): not run"
        )
    model.eval().to(device)
    ends: list[list[int]] = []
    logits: list[np.ndarray] = []
    with torch.inference_mode():
        for item in prompts()[1]:
            enc = tok.encode(item["text"])
            ids = enc.ids[:MAX_POSITIONS]
            if not ids:
                ends.append([])
                logits.append(np.zeros((0, 0), np.float32))
                continue
            out = model(input_ids=torch.tensor([ids], device=device)).logits[0]
            ends.append([int(o[1]) for o in enc.offsets[: len(ids)]])
            logits.append(out.float().cpu().numpy())
    del model
    return Outputs(tok.get_vocab(), ends, logits, str(config.model_type))
