"""Decide, from the weights, how a candidate model relates to each reference model.

Evidence runs cheapest first and the expensive tiers run only where the cheap ones left doubt:
exact equality (also after re-casting the reference to the candidate's dtype, and as a multiset
so a permuted copy is still exact), structure (config, vocabulary, shapes: routes the tests,
never convicts), aligned tests with p-values, then permutation-robust matching after mapping
the residual basis. Once dependence is shown, diagnostics name the relation: quantized,
pruned (layer map), merge (regression on the parents), low-rank delta (merged LoRA), sparse delta
(TIES/DARE). p-values are Bonferroni-corrected over every test and every reference.
"""

from __future__ import annotations

import dataclasses
import math
import re
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gate import hashing
from gate.formats import safetensors
from gate.lineage import adapters, layermap, merges, models, stats
from gate.lineage.models import Model, iter_float, sample_rows
from gate.lineage.result import (
    DEFAULT_ALPHA,
    EXACT_LOG10_P,
    LayerEvidence,
    LineageReport,
    Relation,
    TensorEvidence,
    Verdict,
)
from gate.lineage.tensors import TensorRef, rounded

if TYPE_CHECKING:
    import numpy as np

MATCH_BUDGET = 8  # permutation-robust tests per reference (they cost rows x rows products)
MAX_ASSIGNMENT = 4096
MAX_ROWS = 512  # rows (and columns) sampled per matrix for the aligned tests
MULTISET_MAX = 1 << 20  # elements up to which the sorted-values fingerprint is computed
MULTISET_MIN = 16  # and from which (with half as many distinct values)
ORDER_COLUMNS = 256  # columns a module's rows are matched on to re-order its bias
RECAST_BLOCK = 4096  # rows decoded at a time when comparing across dtypes
RANK_SAMPLE = 16  # changed tensors whose delta rank is estimated
CONFIG_KEYS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)
SURE = -12.0  # log10 p below which one tensor settles dependence and matching stops
# Practical significance: a test counts as evidence only when its |cos| exceeds the chance level
# by this much. On the zoo, the strongest such margin of 350 unrelated pairs was 0.071 and the
# weakest of the derived pairs 0.53 (a 0.42-weight SLERP parent): docs/lineage.md.
MIN_MARGIN = 0.15
EQUIVALENT = 0.99999  # a light fine-tune stays below (0.9993-0.9997 in the zoo's shortest)
# An in-place |cos| below this, though significant, is re-tested permutation-invariantly: a
# partial permutation (some heads moved) stays correlated in place. Light fine-tunes sit far
# above it; heavily trained ones fall below on some tensors (the zoo's 300-step fine-tune at lr
# 3e-3: 0.06), where the extra tests cost time (budgeted until dependence is certain) and, on
# the zoo, changed no verdict.
PARTIAL = 0.9
# the share of each side's vocabulary the other lacks that makes two models siblings rather
# than a vocabulary-pruned or -extended derivation (pruning only drops tokens, extension only
# adds them)
SIBLING_TOKENS = 0.05
_EXPERT = re.compile(r"^(.*\.experts\.)(\d+)(\..+)$")  # one routed expert's tensor (its role)
_ROUTER = "blk.*.ffn_gate_inp.weight"  # the router: one row per expert
_VOCAB_ROLES = ("token_embd.weight", "output.weight")
CONV1D_ARCHS = ("gpt2", "openai-gpt", "imagegpt")  # transformers' Conv1D: weights [in, out]
_TOKEN_AXIS = (*_VOCAB_ROLES, "position_embd.weight")  # rows indexed by tokens or positions
# which linear layers read each norm's output (RMSNorm/LayerNorm weights fold into them)
_NORM_READERS = {
    "attn_norm.weight": ("attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_qkv.weight"),
    "ffn_norm.weight": ("ffn_gate.weight", "ffn_up.weight"),
    "output_norm.weight": ("output.weight",),
}


@dataclasses.dataclass
class _Pair:
    c: TensorRef
    r: TensorRef
    evidence: TensorEvidence | None = None
    exact: bool = False


def compare(
    candidate: Model,
    references: Sequence[Model],
    alpha: float = DEFAULT_ALPHA,
    exact_matches: dict[str, set[str]] | None = None,
    family: int | None = None,
) -> LineageReport:
    """The relation of the candidate to each reference, plus merge analysis across them.

    exact_matches: per reference display name, the candidate tensor names whose content digest
    equals some reference tensor's (tier 0, computed from the stat-cached scan).
    family: the number of references p-values are corrected for (default: those given; an
    index lookup compares with a shortlist but corrects for every pack in the index).
    """
    # One BLAS thread: the tests are many small products and decompositions, where OpenBLAS's
    # thread start-up dominates (measured: a 256x96 SVD 0.5 s threaded, 1 ms single-threaded).
    import numpy as np
    from threadpoolctl import threadpool_limits

    # huge but finite weights overflow float32 products: the result is a weaker statistic
    # (record() turns non-finite ones into "no evidence"), not a warning
    with threadpool_limits(limits=1, user_api="blas"), np.errstate(all="ignore"):
        return _compare(candidate, references, alpha, exact_matches or {}, family)


def _compare(
    candidate: Model,
    references: Sequence[Model],
    alpha: float,
    exact_matches: dict[str, set[str]],
    family: int | None,
) -> LineageReport:
    n_refs = max(family or 0, len(references))
    verdicts = [
        _Compare(candidate, ref, n_refs, alpha, exact_matches.get(ref.display, set())).run()
        for ref in references
    ]
    verdicts = merges.across_references(candidate, references, verdicts)
    problems = tuple(candidate.problems) + tuple(
        f"{r.display}: {p}" for r in references for p in r.problems
    )
    return LineageReport(candidate.display, alpha, tuple(verdicts), problems)


class _Compare:
    def __init__(
        self, cand: Model, ref: Model, n_refs: int, alpha: float, digest_matches: set[str]
    ) -> None:
        self.cand, self.ref, self.n_refs, self.alpha = cand, ref, n_refs, alpha
        self.digest_matches = digest_matches
        self.seed = zlib.crc32(ref.display.encode())
        self.tests = 0
        self.matches = 0
        self.certain = False
        self.constant: set[str] = set()
        self.folded: set[str] = set()
        self.edited: dict[str, tuple[int, int]] = {}  # name -> (values changed in place, size)
        self._q: np.ndarray | bool | None = False  # False: not computed yet
        self._anchored: set[int] | None = None
        self._tokens: dict[int, int | None] = {}  # id(model) -> token embedding rows
        self.experts: dict[int, list[int]] = {}  # layer -> the reference expert of each
        self.notes: list[str] = []
        self.details: dict[str, Any] = {}

    # ------------------------------------------------------------------ driver
    def run(self) -> Verdict:
        structure = self.structure()
        if self.cand.adapter is not None:
            return adapters.verdict(self.cand, self.ref, structure)
        pairs = self.pairs()
        for p in pairs:
            self.test(p)
        if self.certain:
            for p in pairs:
                self.rotated_vocabulary(p)
        unpaired = [t for t in iter_float(self.cand) if t.name not in {p.c.name for p in pairs}]
        by_content = self.digest_matches | self.content_matches(unpaired)
        for t in unpaired:
            if (t.name not in by_content and self.is_constant(t)) or (
                t.name in by_content and self.formula(self.cand, t)
            ):
                self.constant.add(t.name)
        digest_only = [t for t in unpaired if t.name in by_content and t.name not in self.constant]
        unpaired = [t for t in unpaired if t.name not in self.constant]
        evidence: list[TensorEvidence] = []
        evidence += [
            TensorEvidence(
                t.name,
                "(by content)",
                t.layer,
                "exact",
                "flat",
                False,
                1.0,
                0.0,
                EXACT_LOG10_P,
                1.0,
            )
            for t in digest_only
        ]
        layer_map = self.layer_map(pairs) if self.needs_layer_map(pairs) else None
        if layer_map is not None:
            pairs = self.remap(pairs, layer_map)
        evidence += [p.evidence for p in pairs if p.evidence is not None]
        return self.decide(structure, pairs, evidence, digest_only, unpaired, layer_map)

    def content_matches(self, unpaired: list[TensorRef]) -> set[str]:
        """Candidate tensors no name lines up with, found in the reference by content: renamed
        copies (tier 0 when the gate's cached scan digests were not passed in)."""
        import blake3

        wanted = {(t.shape, t.dtype) for t in unpaired if t.size > 1}
        if not wanted:
            return set()
        seen = {
            blake3.blake3(self.ref.raw(t)).digest()
            for t in iter_float(self.ref)
            if (t.shape, t.dtype) in wanted
        }
        return {
            t.name
            for t in unpaired
            if blake3.blake3(self.cand.raw(t)).digest() in seen and not self.is_constant(t)
        }

    def is_constant(self, t: TensorRef) -> bool:
        """Constant on a sample of rows (unit norms, zero biases), or a table computed by a
        formula: no evidence either way."""
        rows = sample_rows(self.cand.rows(t), MAX_ROWS)
        return float(self.cand.array(t, rows).std()) == 0.0 or self.formula(self.cand, t)

    def tokens(self, model: Model) -> int | None:
        """The rows of a model's token embedding (None without one)."""
        if id(model) not in self._tokens:
            embd = next((e for e in model.tensors.values() if e.role == "token_embd.weight"), None)
            self._tokens[id(model)] = None if embd is None else (embd.full_shape or embd.shape)[0]
        return self._tokens[id(model)]

    def anchored(self) -> set[int]:
        """Widths of a residual stream a formula's table is added to (Whisper's encoder). Its
        axis is then the same in every model of the architecture, not an arbitrary order of
        hidden units, so vectors along it (norm gains and biases, output biases) correlate
        between independent models (|r| 0.69 between two Whisper seeds' first-layer norm
        bias): they are no evidence. Matrices keep a unit axis of their own and still are."""
        if self._anchored is None:
            self._anchored = {
                t.shape[1]
                for m in (self.cand, self.ref)
                for t in m.tensors.values()
                if len(t.shape) == 2 and self.formula(m, t)
            }
        return self._anchored

    def formula(self, model: Model, t: TensorRef) -> bool:
        """Values any model of the architecture and corpus holds, whatever its lineage: a
        position table computed rather than learned (Whisper's encoder positions are fixed
        sinusoids, so an exact match says nothing), or a vector indexed by token alone (a
        masked-LM head's output bias learns the corpus's token frequencies: 0.97 between two
        BERTs trained from different seeds)."""
        if t.layer is None and len(t.shape) == 1 and t.shape[0] == self.tokens(model):
            return True
        if len(t.shape) < 2 or t.size > MULTISET_MAX:
            return False
        if hashing.positional(t.name) or hashing.positional(t.role):
            return len(t.shape) == 2 and hashing.formula_table(
                "F32", t.shape, model.array(t).tobytes()
            )
        # a Fourier basis (STFT kernels) whatever its name: four rows first, then every row
        if t.shape[0] < hashing.Rows.MIN_ROWS or t.size // t.shape[0] < hashing.Rows.MIN_COLS:
            return False
        return stats.fourier_rows(model.array(t, sample_rows(t.shape[0], 4, runs=1))) and (
            stats.fourier_rows(model.array(t))
        )

    # ------------------------------------------------------------------ tier 1: structure
    def structure(self) -> dict[str, Any]:
        cc, rc = self.cand.config, self.ref.config
        diffs = {
            k: [cc.get(k), rc.get(k)]
            for k in CONFIG_KEYS
            if k in cc and k in rc and cc.get(k) != rc.get(k)
        }
        out: dict[str, Any] = {
            "config_differences": diffs,
            "layers": [self.cand.layers, self.ref.layers],
            "tensors": [len(self.cand.tensors), len(self.ref.tensors)],
        }
        cv, rv = self.cand.vocab, self.ref.vocab
        if cv is not None and rv is not None:
            shared = len(cv.keys() & rv.keys())
            out["vocabulary"] = {
                "candidate": len(cv),
                "reference": len(rv),
                "shared": shared,
                "identical": cv == rv,
            }
        shapes_c = {t.role for t in self.cand.tensors.values()}
        shapes_r = {t.role for t in self.ref.tensors.values()}
        out["shared_roles"] = len(shapes_c & shapes_r)
        return out

    # ------------------------------------------------------------------ pairing
    def pairs(self) -> list[_Pair]:
        by_role = {(t.role, t.layer): t for t in iter_float(self.ref)}
        experts = self.expert_order()
        out = []
        for t in iter_float(self.cand):
            role, m = t.role, _EXPERT.match(t.role)
            if m and t.layer in experts:  # the reference's expert this one was found to be
                role = f"{m.group(1)}{experts[t.layer][int(m.group(2))]}{m.group(3)}"
            r = by_role.get((role, t.layer))
            if r is not None and len(r.shape) == len(t.shape):
                out.append(_Pair(*self.oriented(t, r)))
        return out + self.by_shape()

    def by_shape(self) -> list[_Pair]:
        """Tensors of roles the other side lacks altogether (another exporter's names: `conv1`
        for `encoder.0.reparam_conv`), paired when each is the only such tensor of its shape on
        both sides. A wrong pair costs a test, never a verdict: its tests are calibrated."""
        c_roles = {t.role for t in iter_float(self.cand)}
        r_roles = {t.role for t in iter_float(self.ref)}
        mine: dict[tuple[int, ...], list[TensorRef]] = {}
        theirs: dict[tuple[int, ...], list[TensorRef]] = {}
        for t in iter_float(self.cand):  # roles the reference lacks altogether
            if t.role not in r_roles and len(t.shape) >= 2:
                mine.setdefault(t.shape, []).append(t)
        for t in iter_float(self.ref):
            if t.role not in c_roles and len(t.shape) >= 2:
                theirs.setdefault(t.shape, []).append(t)
        return [
            _Pair(c[0], theirs[shape][0])
            for shape, c in mine.items()
            if len(c) == 1 and len(theirs.get(shape, ())) == 1
        ]

    def oriented(self, c: TensorRef, r: TensorRef) -> tuple[TensorRef, TensorRef]:
        """GPT-2's Conv1D stores its linear weights [in, out], as ONNX's MatMul does, which the
        reader shows as torch's [out, in]: against such a model, an ONNX weight is compared as
        stored."""

        def conv1d(m: Model) -> bool:
            return str(m.config.get("model_type")) in CONV1D_ARCHS

        if len(c.shape) != 2 or c.transposed == r.transposed:
            return c, r
        if c.transposed and c.shape[::-1] == r.shape and conv1d(self.ref):
            c = dataclasses.replace(c, transposed=False, shape=r.shape)
        elif r.transposed and r.shape[::-1] == c.shape and conv1d(self.cand):
            r = dataclasses.replace(r, transposed=False, shape=c.shape)
        return c, r

    def expert_order(self) -> dict[int, list[int]]:
        """Per mixture-of-experts layer, which reference expert each candidate expert is.
        Experts are a permutation symmetry (re-ordering them with the router's rows keeps the
        function), so they are paired by the router: each expert's row is its routing
        direction in the residual stream, matched by Hungarian assignment on |cosine| (after
        the residual rotation when one was fitted). Layers kept in order are left out."""
        import numpy as np

        cand = {t.layer: t for t in self.cand.tensors.values() if t.role == _ROUTER}
        ref = {t.layer: t for t in self.ref.tensors.values() if t.role == _ROUTER}
        out: dict[int, list[int]] = {}
        for layer, ct in cand.items():
            rt = ref.get(layer)
            if layer is None or rt is None or ct.shape != rt.shape or len(ct.shape) != 2:
                continue
            c, r = self.cand.array(ct), self.ref.array(rt)
            q = self.rotation()
            if q is not None and q.shape[0] == r.shape[1]:
                r = r @ q
            perm, _ = stats.assignment(r, c)  # perm[i]: the reference row candidate row i is
            if (perm >= 0).all() and (perm != np.arange(len(perm))).any():
                out[layer] = [int(x) for x in perm]
        self.experts = out  # reported only when the candidate is found dependent
        return out

    # ------------------------------------------------------------------ tiers 0, 2 and 3
    def test(self, p: _Pair) -> None:
        same = p.c.shape == p.r.shape
        rows = sample_rows(self.cand.rows(p.c), MAX_ROWS) if same else None
        cols = sample_rows(p.c.shape[1], MAX_ROWS) if same and len(p.c.shape) == 2 else None
        c = self.cand.array(p.c, rows, cols)
        # a constant tensor (unit norm, zero bias) says nothing about lineage, nor does one
        # that either side holds as a formula's table (a fine-tune that unfroze Whisper's
        # sinusoids still correlates with every other Whisper's at |r| 1.00)
        if (
            float(c.std()) == 0.0
            or self.formula(self.cand, p.c)
            or self.formula(self.ref, p.r)
            or (len(p.c.shape) == 1 and p.c.shape[0] in self.anchored())
        ):
            self.constant.add(p.c.name)
            return
        if not same or (p.c.role in _VOCAB_ROLES and self.vocabularies_differ()):
            p.evidence = self.reshaped(p)  # token rows aligned by token, not by index
            return
        exact = self.exact(p)
        if exact is not None:
            p.exact = True
            p.evidence = self.record(p, exact, "flat", False, 1.0, 0.0, EXACT_LOG10_P)
            return
        r = self.ref_array(p, rows, cols)
        self.tests += 1
        out = stats.aligned(c, r, hidden_columns_only=p.c.role in _TOKEN_AXIS)
        if (rows is not None or cols is not None) and out.raw_effect >= EQUIVALENT:
            # the sample looks like a transformed copy: a claim that strong needs every row
            c, r = self.cand.array(p.c), self.ref_array(p)
            out = stats.aligned(c, r, hidden_columns_only=p.c.role in _TOKEN_AXIS)
            rows = cols = None
        if out.raw_effect >= EQUIVALENT and rows is None and cols is None and c.shape == r.shape:
            changed = int((c != r).sum())
            if changed * 2 <= c.size:  # most values untouched: an edit, not a transform
                self.edited[p.c.name] = (changed, int(c.size))
        best = out
        # related in place but not equal: part of it may be a permutation (some attention
        # heads moved, others not), which only the permutation-invariant tests can show
        partial = out.log10_p <= SURE and out.raw_effect < PARTIAL
        unsure = out.log10_p > SURE or partial
        multiset = unsure and p.c.dtype == p.r.dtype and p.c.size <= MULTISET_MAX
        if multiset and _multiset_equal(self.cand.array(p.c), self.ref_array(p)):
            p.exact = True
            p.evidence = self.record(p, "multiset", "flat", False, 1.0, 0.0, EXACT_LOG10_P)
            return
        if unsure and c.ndim == 2 and self.may_match(p):
            # matching needs every unit of the candidate: whole tensors (budgeted). The residual
            # rotation is fitted first, so its working set and the whole tensors never overlap.
            self.rotation()
            whole = rows is None and cols is None
            fc, fr = (c, r) if whole else (self.cand.array(p.c), self.ref_array(p))
            for o in self.robust(fc, fr):
                # both settled: the one that explains more (a permutation matched at |cos| 1
                # says more than a partial in-place agreement, whatever their p-values)
                settled = o.log10_p <= SURE and best.log10_p <= SURE
                if (settled and o.effect > best.effect) or (
                    not settled and o.log10_p < best.log10_p
                ):
                    best = o
            if best.test == "matched" and best.log10_p <= SURE:
                self.certain = True
                if "permutation" not in self.details:
                    self.permutation(p, fc, fr, best)
        p.evidence = self.record(
            p,
            best.test,
            best.orientation,
            best.rotated,
            best.effect,
            best.null_effect,
            best.log10_p,
            best.raw_effect,
        )

    def rotated_vocabulary(self, p: _Pair) -> None:
        """Once dependence is certain, measure how closely a token-indexed matrix agrees after
        the residual rotation. Its p-value is not counted (the rotation was fitted on the
        embeddings), but the effect tells a rotated copy from a fine-tune."""
        e = p.evidence
        if p.c.role not in _VOCAB_ROLES or e is None or e.log10_p <= SURE or _exact(e):
            return
        q = self.rotation()
        if q is None or p.c.shape != p.r.shape or p.r.shape[1] != q.shape[0]:
            return
        rows = sample_rows(self.cand.rows(p.c), MAX_ROWS)
        c, r = self.cand.array(p.c, rows), self.ref_array(p, rows)
        o = stats.aligned(c, r @ q, rotated=True, hidden_columns_only=True)
        if o.effect > e.effect:
            p.evidence = self.record(
                p, "aligned", o.orientation, True, o.effect, o.null_effect, 0.0, o.raw_effect
            )

    def may_match(self, p: _Pair) -> bool:
        """Matching never runs on the token axis (independent models trained on one corpus
        share token structure) and, once dependence is certain, runs on every tensor so the
        relation can be named; before that it is budgeted."""
        if p.c.role in _VOCAB_ROLES:
            return False
        return self.certain or self.matches < MATCH_BUDGET

    def ref_array(
        self, p: _Pair, rows: np.ndarray | None = None, cols: np.ndarray | None = None
    ) -> np.ndarray:
        """The reference tensor, with its norm weights folded in where the candidate's norms
        are all ones (the first step of a residual-rotation attack, which is otherwise exact)."""
        r = self.ref.array(p.r, rows, cols)
        norm = self.folded_norm(p)
        if norm is not None and len(p.r.shape) == 2 and p.r.shape[1] == norm.shape[0]:
            self.folded.add(p.r.name)
            r *= (norm if cols is None else norm[cols])[None, :]  # r is a fresh decoded copy
            return r
        return r

    def folded_norm(self, p: _Pair) -> np.ndarray | None:
        short = p.c.role.removeprefix("blk.*.")
        for norm, readers in _NORM_READERS.items():
            if short not in readers:
                continue
            role = norm if norm == "output_norm.weight" else "blk.*." + norm
            key = (role, p.c.layer)
            cn = self._norm(self.cand, key)
            rn = self._norm(self.ref, key)
            if cn is None or rn is None or cn.shape != rn.shape:
                return None
            if (cn == 1.0).all() and not (rn == 1.0).all():
                return rn
        return None

    @staticmethod
    def _norm(model: Model, key: tuple[str, int | None]) -> np.ndarray | None:
        for t in model.tensors.values():
            if (t.role, t.layer) == key and len(t.shape) == 1:
                return model.array(t)
        return None

    def exact(self, p: _Pair) -> str | None:
        """Tier 0 on a same-shaped pair: equal bytes, or equal after casting the wider of the two
        to the narrower one's dtype (a bf16 copy of an fp32 model is still a copy, either way
        round). Streams in blocks of rows and stops at the first difference."""
        import numpy as np

        if p.c.name in self.digest_matches:
            return "exact"
        if p.c.dtype == p.r.dtype:
            return "exact" if models.same_bytes(self.cand, p.c, self.ref, p.r) else None
        try:
            target = np.dtype(self.cand_np_dtype(p.c))
            other = np.dtype(self.cand_np_dtype(p.r))
        except KeyError:
            return None
        # the narrower side is the cast: a candidate wider than its reference (fp32 checked
        # against its own fp16 re-publication) is a copy when it rounds to the reference
        down = other.itemsize < target.itemsize
        n = self.cand.rows(p.c)
        for start in range(0, n, RECAST_BLOCK):
            idx = np.arange(start, min(n, start + RECAST_BLOCK)) if len(p.c.shape) >= 2 else None
            c, r = self.cand.array(p.c, idx), self.ref.array(p.r, idx)
            wide, narrow = (c, r) if down else (r, c)
            if not np.array_equal(
                wide.astype(other if down else target).astype(np.float32), narrow
            ):
                return None
        return "recast"

    @staticmethod
    def cand_np_dtype(t: TensorRef) -> Any:
        from gate.lineage.tensors import numpy_dtype

        if t.dtype not in ("F16", "BF16", "F32", "F64", "F8_E5M2", "F8_E4M3"):
            raise KeyError(t.dtype)
        return numpy_dtype(t.dtype)

    def robust(self, c: np.ndarray, r: np.ndarray) -> list[stats.Outcome]:
        """Permutation-, sign- and scale-robust matching, in place and after mapping the
        reference's residual axis into the candidate's basis."""
        self.matches += 1
        q = self.rotation()
        out = []
        for orient in ("rows", "columns"):
            length = c.shape[1] if orient == "rows" else c.shape[0]
            if min(c.shape) < stats.MIN_ROWS or length < stats.MIN_MATCH_DIM:
                continue
            rotations = [None] + ([q] if q is not None and q.shape[0] == length else [])
            self.tests += len(rotations)
            out += stats.matched_many(c, r, self.seed, rotations, orient)
        return out

    def reshaped(self, p: _Pair) -> TensorEvidence | None:
        """Shapes differ: a vocabulary change (align rows by token string) or pruned width."""
        cs, rs = p.c.shape, p.r.shape
        if len(cs) == 2 and p.c.role in _VOCAB_ROLES and cs[1] == rs[1]:
            rows = self.vocab_rows(cs[0], rs[0])
            if rows is not None and len(rows[0]) >= stats.MIN_ROWS:
                self.tests += 1
                c, r = self.cand.array(p.c, rows[0]), self.ref_array(p, rows[1])
                o = stats.aligned(c, r, hidden_columns_only=True)
                self.details["vocabulary"] = {
                    "candidate": cs[0],
                    "reference": rs[0],
                    "aligned_tokens": len(rows[0]),
                }
                return self.record(
                    p,
                    "vocabulary",
                    o.orientation,
                    False,
                    o.effect,
                    o.null_effect,
                    o.log10_p,
                    o.raw_effect,
                )
        if len(cs) != 2 or not self.may_match(p):
            return None
        if cs[1] == rs[1] and cs[1] >= stats.MIN_MATCH_DIM:
            orient = "rows"
        elif cs[0] == rs[0] and cs[0] >= stats.MIN_MATCH_DIM:
            orient = "columns"
        else:
            return None
        self.matches += 1
        self.tests += 1
        c, r = self.cand.array(p.c), self.ref_array(p)
        o = stats.matched(c, r, self.seed, None, orient)  # type: ignore[arg-type]
        axis = 0 if orient == "rows" else 1
        widths = self.details.setdefault("widths", {})
        widths[p.c.role] = [int(cs[axis]), int(rs[axis])]
        return self.record(
            p, "matched", orient, False, o.effect, o.null_effect, o.log10_p, o.raw_effect
        )

    def vocabularies_differ(self) -> bool:
        cv, rv = self.cand.vocab, self.ref.vocab
        return cv is not None and rv is not None and cv != rv

    def exclusive_tokens(self) -> tuple[int, int]:
        """Tokens only the candidate has, and only the reference has."""
        cv, rv = self.cand.vocab, self.ref.vocab
        if cv is None or rv is None:
            return 0, 0
        shared = len(cv.keys() & rv.keys())
        return len(cv) - shared, len(rv) - shared

    def vocab_rows(
        self, n_cand: int, n_ref: int, cap: int = MAX_ROWS
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Row indices of the tokens both vocabularies share (a fixed sample of at most
        MAX_ROWS), in the candidate's and the reference's matrices."""
        import numpy as np

        cv, rv = self.cand.vocab, self.ref.vocab
        if cv is None or rv is None:
            return None
        shared = sorted(
            (cv[s], rv[s]) for s in cv.keys() & rv.keys() if cv[s] < n_cand and rv[s] < n_ref
        )
        arr = np.array(shared, dtype=np.int64).reshape(-1, 2)
        pick = sample_rows(len(arr), cap)
        if pick is not None:
            arr = arr[pick]
        return arr[:, 0], arr[:, 1]

    def rotation(self) -> np.ndarray | None:
        """The orthogonal map from the reference's residual basis to the candidate's, fitted
        on the embeddings of shared tokens; None when there is nothing to fit it on."""
        if self._q is not False:
            return self._q  # type: ignore[return-value]
        self._q = None
        ce = next((t for t in self.cand.tensors.values() if t.role == "token_embd.weight"), None)
        re_ = next((t for t in self.ref.tensors.values() if t.role == "token_embd.weight"), None)
        if ce is None or re_ is None or ce.shape[1:] != re_.shape[1:]:
            return None
        m = self.embedding_product(ce, re_)  # the embedding rows are released on return
        if m is not None:
            self._q = stats.procrustes(m)
        return self._q

    def embedding_product(self, ce: TensorRef, re_: TensorRef) -> np.ndarray | None:
        """r.T @ c (float64) over the embedding rows of shared tokens: procrustes' input."""
        import numpy as np

        tokens = max(MAX_ROWS, 2 * ce.shape[1])  # enough for a well-determined rotation
        rows = self.vocab_rows(ce.shape[0], re_.shape[0], tokens)
        if rows is not None and len(rows[0]) > ce.shape[1]:
            c, r = self.cand.array(ce, rows[0]), self.ref.array(re_, rows[1])
        elif ce.shape == re_.shape and ce.shape[0] > ce.shape[1]:  # fewer rows fit no rotation
            pick = sample_rows(ce.shape[0], tokens)
            c, r = self.cand.array(ce, pick), self.ref.array(re_, pick)
        else:
            return None
        m: np.ndarray = (r.T @ c).astype(np.float64)
        return m

    def permutation(self, p: _Pair, c: np.ndarray, r: np.ndarray, o: stats.Outcome) -> None:
        import numpy as np

        if max(c.shape) > MAX_ASSIGNMENT:
            return
        q = self.rotation() if o.rotated else None
        rr = r
        if q is not None:
            rr = r @ q if o.orientation == "rows" else q.T @ r
        cc, rr = (c, rr) if o.orientation == "rows" else (c.T, rr.T)
        perm, score = stats.assignment(cc, rr)
        moved = int((perm != np.arange(len(perm))).sum())
        self.details["permutation"] = {
            "tensor": p.c.name,
            "units": len(perm),
            "moved": moved,
            "mean_matched_cosine": round(score, 4),
            "first": [int(x) for x in perm[:16]],
        }

    def record(
        self,
        p: _Pair,
        test: str,
        orient: str,
        rotated: bool,
        effect: float,
        null: float,
        log10_p: float,
        raw: float | None = None,
    ) -> TensorEvidence:
        if not all(math.isfinite(x) for x in (effect, null, log10_p, raw or 0.0)):
            effect, null, log10_p, raw = 0.0, 0.0, 0.0, 0.0  # overflowed: no evidence
        return TensorEvidence(
            p.c.name,
            p.r.name,
            p.c.layer,
            test,
            orient,
            rotated,
            round(effect, 6),
            round(null, 6),
            log10_p,
            round(effect if raw is None else raw, 6),
        )

    def remap(self, pairs: list[_Pair], layer_map: list[int | None]) -> list[_Pair]:
        """Test each candidate layer against the reference layer it was found to come from."""
        by_key = {(t.role, t.layer): t for t in iter_float(self.ref)}
        out = []
        for p in pairs:
            src = (
                layer_map[p.c.layer]
                if p.c.layer is not None and p.c.layer < len(layer_map)
                else None
            )
            if src is None or src == p.c.layer or (p.c.role, src) not in by_key:
                out.append(p)
                continue
            q = _Pair(p.c, by_key[(p.c.role, src)])
            self.test(q)
            out.append(q)
        return out

    # ------------------------------------------------------------------ layer map
    def needs_layer_map(self, pairs: list[_Pair]) -> bool:
        if self.cand.layers != self.ref.layers:
            return True
        by_layer: dict[int, list[float]] = {}
        for p in pairs:
            if p.evidence is not None and p.c.layer is not None:
                by_layer.setdefault(p.c.layer, []).append(p.evidence.log10_p)
        strong = {k for k, v in by_layer.items() if min(v) <= SURE}
        return 0 < len(strong) < len(by_layer)

    def layer_map(self, pairs: list[_Pair]) -> list[int | None]:
        """Which reference layer each candidate layer came from (order-preserving), by testing
        every pair of layers on a sample of rows and aligning with dynamic programming."""
        import numpy as np

        roles = sorted(
            {
                t.role
                for t in self.cand.tensors.values()
                if t.layer is not None and t.floating and len(t.shape) == 2
            }
        )
        ct = {(t.role, t.layer): t for t in self.cand.tensors.values()}
        rt = {(t.role, t.layer): t for t in self.ref.tensors.values()}
        nc, nr = self.cand.layers, self.ref.layers
        score = np.zeros((nc, nr))
        for i in range(nc):
            for role in roles[:4]:
                c_t = ct.get((role, i))
                if c_t is None:
                    continue
                head = np.arange(min(c_t.shape[0], 4 * stats.SAMPLE_ROWS))
                c = self.cand.array(c_t, head)
                for j in range(nr):
                    r_t = rt.get((role, j))
                    if r_t is None or r_t.shape[1:] != c_t.shape[1:]:
                        continue
                    r = self.ref.array(r_t, np.arange(min(r_t.shape[0], 4 * stats.SAMPLE_ROWS)))
                    if r.shape != c.shape:
                        o = stats.matched(c, r, self.seed, None, "rows")
                    else:
                        o = stats.aligned(c, r)
                    self.tests += 1
                    score[i, j] += min(-o.log10_p, 50.0)
        return layermap.order_preserving(score, threshold=6.0)

    # ------------------------------------------------------------------ verdict
    def decide(
        self,
        structure: dict[str, Any],
        pairs: list[_Pair],
        evidence: list[TensorEvidence],
        digest_only: list[TensorRef],
        unpaired: list[TensorRef],
        layer_map: list[int | None] | None,
    ) -> Verdict:
        tested = [e for e in evidence if e is not None]
        n_tests = max(self.tests, 1) * self.n_refs
        exact = [e for e in tested if e.test in ("exact", "recast", "multiset")]
        # only tests whose effect clears the floor count (a subset: the Bonferroni bound holds)
        finite = [
            e.log10_p
            for e in tested
            if e.log10_p > EXACT_LOG10_P and e.effect - e.null_effect >= MIN_MARGIN
        ]
        if exact:
            log10_p: float | None = EXACT_LOG10_P
        elif finite:
            log10_p = min(0.0, min(finite) + math.log10(n_tests))
        elif tested:
            log10_p = 0.0
            self.notes.append(f"no test reached the effect floor (|cos| {MIN_MARGIN} above chance)")
        else:
            log10_p = None
        dependent = log10_p is not None and log10_p <= math.log10(self.alpha)
        if dependent:
            tested = self.realign_vectors(pairs, tested)
        if dependent and self.experts:
            self.details["experts"] = {str(k): v for k, v in sorted(self.experts.items())}
            self.notes.append(
                "routed experts re-ordered (paired by their router rows): "
                + "; ".join(f"layer {k}: {v}" for k, v in sorted(self.experts.items()))
            )
        informative = [t for t in iter_float(self.cand) if t.name not in self.constant]
        if self.folded:
            self.details["folded_norms"] = len(self.folded)
        effects = self.effects(tested, informative, pairs)
        layers = self.layer_table(tested, layer_map)
        if layer_map is not None:
            self.details["layer_map"] = layer_map
        relation = self.relation(dependent, log10_p, tested, effects, pairs, layer_map, unpaired)
        method = (
            "exact equality of tensor content (no chance match)"
            if exact
            else f"min over {self.tests} tensor tests x {self.n_refs} reference(s),"
            f" Bonferroni-corrected; only tests whose |cos| exceeds chance by {MIN_MARGIN} count"
        )
        p_value = None if log10_p is None else (0.0 if log10_p < -300 else 10.0**log10_p)
        return Verdict(
            reference=self.ref.display,
            relation=relation,
            dependent=dependent,
            p_value=p_value,
            log10_p=None if log10_p is None else max(log10_p, EXACT_LOG10_P),
            p_method=method,
            tests=self.tests,
            effects=effects,
            details=self.details,
            structure=structure,
            layers=layers,
            tensors=tuple(tested),
            notes=tuple(self.notes),
        )

    def effects(
        self, tested: list[TensorEvidence], informative: list[TensorRef], pairs: list[_Pair]
    ) -> dict[str, float]:
        n = len(informative) or 1
        exact = sum(e.test in ("exact", "recast", "multiset") for e in tested)
        # exact and recast tensors agree in place (cosine 1); a cosine nobody measured is left
        # out rather than shown as 0.0
        in_place = ("aligned", "vocabulary", "exact", "recast")
        aligned = [e.effect for e in tested if e.test in in_place]
        matched = [e.effect for e in tested if e.test == "matched"]
        out = {"exact_fraction": round(exact / n, 4)}
        out["compared_fraction"] = round(len(tested) / n, 4)
        if aligned:
            out["mean_aligned_cosine"] = round(sum(aligned) / len(aligned), 4)
        if matched:
            out["mean_matched_cosine"] = round(sum(matched) / len(matched), 4)
        return out

    def layer_table(
        self, tested: list[TensorEvidence], layer_map: list[int | None] | None
    ) -> tuple[LayerEvidence, ...]:
        groups: dict[int | None, list[TensorEvidence]] = {}
        for e in tested:
            groups.setdefault(e.layer, []).append(e)
        rows = []
        for layer in sorted(groups, key=lambda x: (x is None, x or 0)):
            es = groups[layer]
            rows.append(
                LayerEvidence(
                    "other" if layer is None else str(layer),
                    len(es),
                    sum(e.test in ("exact", "recast", "multiset") for e in es),
                    round(sum(e.effect for e in es) / len(es), 4),
                    max(min(e.log10_p for e in es), EXACT_LOG10_P),
                    layer_map[layer]
                    if layer_map is not None and layer is not None and layer < len(layer_map)
                    else None,
                    min(es, key=lambda e: e.log10_p).test,
                )
            )
        return tuple(rows)

    def relation(
        self,
        dependent: bool,
        log10_p: float | None,
        tested: list[TensorEvidence],
        effects: dict[str, float],
        pairs: list[_Pair],
        layer_map: list[int | None] | None,
        unpaired: list[TensorRef],
    ) -> Relation:
        if not dependent:
            if log10_p is None:
                self.notes.append("no tensor of the candidate could be compared with the reference")
                return "inconclusive"
            return "independent"
        if self.cand.quantization is not None:
            self.details["quantization"] = self.cand.quantization
            self.details["summary"] = f"{self.cand.quantization} quantization"
            return "quantized"
        if self.ref.quantization is not None:
            # the other way round: the reference is the quantized one (a model checked against
            # its own GPTQ or GGUF re-publication); their differences are its rounding
            self.details["quantization"] = self.ref.quantization
            self.details["quantized_side"] = "reference"
            self.details["summary"] = (
                f"the reference is a {self.ref.quantization} quantization; this model is not"
            )
            return "quantized"
        shared = self.shared_ancestry(tested)
        if shared:
            self.details["shared"] = [e.candidate for e in shared]
            best = max(shared, key=lambda e: e.effect)
            self.details["summary"] = (
                f"shared ancestry: {', '.join(self.details['shared'])} related (|r| "
                f"{best.effect:.2f}), no layer related: neither derives from the other"
            )
            return "sibling"
        mine, theirs = self.exclusive_tokens()
        apart = min(
            mine / max(len(self.cand.vocab or ()), 1), theirs / max(len(self.ref.vocab or ()), 1)
        )
        if "vocabulary" in self.details and apart >= SIBLING_TOKENS:
            # a derivation keeps a subset of its base's tokens (pruning) or adds to them
            # (extension); two different subsets of one ancestor's vocabulary do neither
            self.details["shared"] = sorted(
                e.candidate for e in tested if e.test == "vocabulary" and e.log10_p <= SURE
            )
            self.details["summary"] = (
                f"shared ancestry: each has tokens the other lacks ({mine} only here, {theirs}"
                f" only there), while the {self.details['vocabulary']['aligned_tokens']} shared"
                " tokens' rows and the layers are related: neither derives from the other"
            )
            return "sibling"
        kept = [x for x in layer_map or [] if x is not None]
        if kept and self.cand.layers < self.ref.layers:  # pruned: what was kept, or nothing
            self.details["summary"] = f"{self.cand.layers} of {self.ref.layers} layers kept: {kept}"
            return "pruned"
        vocab = self.details.get("vocabulary")
        if vocab is not None and vocab["candidate"] < vocab["reference"]:
            self.details["summary"] = (
                f"vocabulary pruned: {vocab['reference']} -> {vocab['candidate']} tokens"
                f" ({vocab['aligned_tokens']} aligned by token)"
            )
            return "pruned"
        if "widths" in self.details and vocab is None:
            w = self.details["widths"]
            if any(a < b for a, b in w.values()):
                rows = all(k in _VOCAB_ROLES for k, (a, b) in w.items() if a < b)
                self.details["summary"] = (
                    "vocabulary pruned (rows of the token-indexed matrices; no tokenizer to align"
                    " them by token): "
                    if rows
                    else "width pruned: "
                ) + ", ".join(f"{k} {b}->{a}" for k, (a, b) in sorted(w.items()))
                return "pruned"
        complete = effects["compared_fraction"] >= 1.0
        # tokens gained, dropped or swapped are no copy; the same tokens re-indexed can be
        resized = vocab is not None and (vocab["candidate"] != vocab["reference"] or mine > 0)
        if complete and tested and not resized and all(_equivalent(e) for e in tested):
            kinds = sorted({e.test for e in tested} - {"exact"})
            transformed = [e for e in tested if not _exact(e)]
            edits = [self.edited[e.candidate] for e in transformed if e.candidate in self.edited]
            if transformed and len(edits) == len(transformed):  # changed in place: not a copy
                self.details["summary"] = (
                    f"nearly identical: {len(edits)} of {len(tested)} tensors differ in"
                    f" {sum(n for n, _ in edits)} of {sum(size for _, size in edits)} values, in"
                    " place (an edit of the reference's weights, not a transform)"
                )
                return "finetune"
            what = []
            if vocab is not None:  # the same tokens, under other ids
                what.append(f"the same {vocab['candidate']} tokens re-indexed")
            if any(e.test != "vocabulary" for e in transformed):
                what.append("weights permuted, scaled or rotated")
            self.details["summary"] = (
                "the same function: " + "; ".join(what)
                if what
                else "identical weights" + (f" ({', '.join(kinds)})" if kinds else "")
            )
            return "copy"
        whole = self.layers_taken(tested)
        if whole:
            self.details["layers_taken_unchanged"] = whole
            self.details["summary"] = (
                f"layers {whole} taken unchanged while others differ: a passthrough/frankenmerge"
            )
            return "merge"
        delta = self.delta_signature(pairs)
        if delta.get("sparse_fraction", 0.0) >= 0.3:
            self.details["summary"] = (
                f"{delta['sparse_fraction']:.0%} of the changed weights are"
                " exactly unchanged: TIES/DARE merge signature"
            )
            return "merge"
        if delta.get("low_rank"):
            self.details["summary"] = f"low-rank delta (rank {delta['rank']}): merged adapter"
        elif vocab is not None:
            grown = vocab["candidate"] > vocab["reference"]
            self.details["summary"] = (
                f"vocabulary {'extended' if grown else 'changed'}: {vocab['reference']} ->"
                f" {vocab['candidate']} tokens ({vocab['aligned_tokens']} aligned by token)"
            )
        return "finetune"

    def realign_vectors(
        self, pairs: list[_Pair], tested: list[TensorEvidence]
    ) -> list[TensorEvidence]:
        """The tensors a function-preserving re-ordering moves that no test of them alone can
        line up: vectors (a module's bias moves with the module's rows; a norm's gain with the
        residual stream), matrices with an axis too short for the matching tests (T5's relative
        position bias: a column per head; a router: a row per expert; token-type embeddings)
        and convolution kernels. When every larger matrix is already the same function (equal,
        or matched at |cos| 1), each such tensor is re-compared after the re-orderings found:
        the residual map (fitted on the embeddings) along every axis of its width, a bias in
        its module weight's row order (and scaled as its rows were), a short matrix in its own
        best-match order (which must be a permutation). Values are compared after rounding to
        the narrower dtype, so a cast copy agrees exactly. p-values are not changed: this only
        names the relation."""

        def short(p: _Pair) -> bool:
            return len(p.c.shape) == 2 and min(p.c.shape) < stats.MIN_MATCH_DIM

        matrices = {(p.c.role, p.c.layer): p for p in pairs if len(p.c.shape) == 2}
        todo = [
            p
            for p in pairs
            if p.evidence is not None
            and not _equivalent(p.evidence)
            and (len(p.c.shape) != 2 or short(p))
            and p.c.size <= MULTISET_MAX  # decoded whole: a fused expert tensor is not
        ]
        settled = all(
            p.evidence is None or _equivalent(p.evidence) or short(p) for p in matrices.values()
        )
        if not todo or not settled:
            return tested
        changed = {}
        for p in todo:
            e = p.evidence
            assert e is not None
            cos = self.reordered_cosine(p, matrices)
            if cos is not None and cos > e.effect:
                p.evidence = self.record(
                    p, "matched", "rows", e.rotated, cos, e.null_effect, e.log10_p, cos
                )
                changed[e] = p.evidence
        return [changed.get(e, e) for e in tested]

    def reordered_cosine(
        self, p: _Pair, matrices: dict[tuple[str, int | None], _Pair]
    ) -> float | None:
        """The best |cos| of a pair over the re-orderings of the reference realign_vectors
        tries, or None when none applies."""
        import numpy as np

        c, r = self.cand.array(p.c), self.ref.array(p.r)
        if c.shape != r.shape:
            return None
        options = []
        q = self.rotation()
        if q is not None and q.shape[0] in r.shape:
            for axis, width in enumerate(r.shape):  # the residual map along each of its axes
                if width == q.shape[0]:
                    r = np.moveaxis(np.tensordot(r, q, axes=([axis], [0])), -1, axis)
            options.append(r)
        if len(p.c.shape) == 1 and p.c.role.endswith(".bias"):
            rows = self.module_rows(p, matrices)
            if rows is not None:
                moved = self.ref.array(p.r)[rows[0]]
                options += [moved, moved * rows[1]]
        if len(p.c.shape) == 2 and min(c.shape) < stats.MIN_MATCH_DIM:
            axis = 0 if c.shape[0] <= c.shape[1] else 1  # the short axis holds the units
            cu, ru = (c, r) if axis == 0 else (c.T, r.T)
            order = np.argmax(np.abs(stats._unit_rows(cu) @ stats._unit_rows(ru).T), axis=1)
            if len(set(order.tolist())) == len(order):  # a re-ordering, nothing else
                options.append(r[order] if axis == 0 else r[:, order])
        # both rounded to the narrower dtype: a cast copy is then equal
        bits = safetensors.DTYPE_BITS
        narrow = p.c.dtype if bits.get(p.c.dtype, 32) <= bits.get(p.r.dtype, 32) else p.r.dtype

        def cast(x: np.ndarray) -> np.ndarray:
            try:
                return rounded(x, narrow)
            except KeyError:
                return np.asarray(x, dtype=np.float32)

        c = cast(c)
        best = None
        for x in options:
            x = cast(x)
            norm = float(np.linalg.norm(c) * np.linalg.norm(x))
            if norm > 0.0:
                cos = abs(float(np.vdot(c, x))) / norm
                best = cos if best is None else max(best, cos)
        return best

    def module_rows(
        self, p: _Pair, matrices: dict[tuple[str, int | None], _Pair]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Which reference row each row of a bias's module weight is (a copy's rows match at
        |cos| 1) and the factor it was scaled by (a unit's output scaled with its bias), or
        None when the module's weight is not there to say."""
        import numpy as np

        w = matrices.get((p.c.role.removesuffix(".bias") + ".weight", p.c.layer))
        if w is None or w.evidence is None or w.c.shape != w.r.shape:
            return None
        if w.c.shape[0] != p.c.shape[0] or w.c.shape[0] > MAX_ASSIGNMENT:
            return None
        # rows told apart on a sample of columns: a copy's rows agree on any of them, and the
        # products stay rows x rows x ORDER_COLUMNS whatever the width
        cols = sample_rows(w.c.shape[1], ORDER_COLUMNS)
        cw = self.cand.array(w.c, None, cols)
        q = self.rotation() if w.evidence.rotated else None
        if q is not None and q.shape[0] == w.r.shape[1]:
            rw = self.ref_array(w) @ (q if cols is None else q[:, cols])
        else:
            rw = self.ref_array(w, None, cols)
        order = np.argmax(np.abs(stats._unit_rows(cw) @ stats._unit_rows(rw).T), axis=1)
        rw = rw[order]
        scale = np.einsum("ij,ij->i", cw, rw) / np.maximum(np.einsum("ij,ij->i", rw, rw), 1e-30)
        return order, scale

    def shared_ancestry(self, tested: list[TensorEvidence]) -> list[TensorEvidence]:
        """The tensors related outside the layers when no layer is: the signature of two
        models that took (different) layers of a common ancestor, or fresh layers over its
        embeddings. A derivation keeps its layers related to the reference's; [] otherwise."""
        limit = math.log10(self.alpha) - math.log10(max(self.tests, 1) * self.n_refs)

        def related(e: TensorEvidence) -> bool:
            return _exact(e) or (e.log10_p <= limit and e.effect - e.null_effect >= MIN_MARGIN)

        layered = [e for e in tested if e.layer is not None]
        if not layered or any(related(e) for e in layered):
            return []
        if self.cand.sampled or self.ref.sampled:
            return []  # a sample pairs layers at one index: renumbered ones would look unrelated
        return [e for e in tested if e.layer is None and related(e)]

    @staticmethod
    def layers_taken(tested: list[TensorEvidence]) -> list[int]:
        """Layers copied whole, when other layers share nothing exact with this reference."""
        by_layer: dict[int, list[bool]] = {}
        for e in tested:
            if e.layer is not None:
                by_layer.setdefault(e.layer, []).append(_exact(e))
        whole = sorted(k for k, v in by_layer.items() if all(v))
        untouched = [k for k, v in by_layer.items() if not any(v)]
        return whole if whole and untouched else []

    def delta_signature(self, pairs: list[_Pair]) -> dict[str, Any]:
        """Low rank (merged LoRA) and exact-zero sparsity (TIES/DARE) of candidate - reference."""

        ranks: list[int] = []
        zeros = total = unchanged = changed = 0
        for p in pairs:
            if p.evidence is None or p.c.shape != p.r.shape or len(p.c.shape) != 2:
                continue
            if p.c.dtype != p.r.dtype:
                continue
            if p.c.role in _VOCAB_ROLES and self.vocabularies_differ():
                continue  # row i is not the same token on both sides
            rows = sample_rows(self.cand.rows(p.c), MAX_ROWS)
            cols = sample_rows(p.c.shape[1], MAX_ROWS)
            d = self.cand.array(p.c, rows, cols) - self.ref.array(p.r, rows, cols)
            if not d.any():
                unchanged += 1
                continue
            changed += 1
            zeros += int((d == 0).sum())
            total += d.size
            if len(ranks) < RANK_SAMPLE:
                ranks.append(stats.effective_rank(d, self.seed))
        out: dict[str, Any] = {}
        if total:
            out["sparse_fraction"] = zeros / total
            self.details["delta"] = {
                "changed_tensors": changed,
                "unchanged_tensors": unchanged,
                "exactly_unchanged_weights": round(zeros / total, 4),
            }
        if ranks:
            rank = max(ranks)
            smallest = min(min(p.c.shape) for p in pairs if len(p.c.shape) == 2)
            out["rank"] = rank
            out["low_rank"] = rank <= min(smallest // 4, 48)
            self.details.setdefault("delta", {})["max_rank"] = rank
            if out["low_rank"]:
                self.details["adapter_rank"] = rank
        return out

    # ------------------------------------------------------------------ adapters


def _exact(e: TensorEvidence) -> bool:
    return e.test in ("exact", "recast", "multiset")


def _equivalent(e: TensorEvidence) -> bool:
    """Exact, or equal up to a function-preserving transform (per-unit scale, sign, order)."""
    return _exact(e) or min(e.effect, e.raw_effect) >= EQUIVALENT


def _multiset_equal(c: np.ndarray, r: np.ndarray) -> bool:
    """Same values in a different arrangement: a permutation-invariant exact fingerprint (a
    permuted copy holds exactly the reference's values, an independent model never does)."""
    import numpy as np

    if c.size != r.size or c.size < MULTISET_MIN:
        return False
    # a permutation keeps the sum and the sum of squares: sort only when both agree
    s1, s2 = float(c.sum(dtype=np.float64)), float(r.sum(dtype=np.float64))
    q1 = float(np.square(c, dtype=np.float64).sum())
    q2 = float(np.square(r, dtype=np.float64).sum())
    if not (
        math.isclose(s1, s2, rel_tol=1e-9, abs_tol=1e-9) and math.isclose(q1, q2, rel_tol=1e-9)
    ):
        return False
    cs = np.sort(c, axis=None)
    # enough distinct values that no chance arrangement matches (a permuted copy's 32-entry
    # key bias is evidence; a vector of a few repeated values is not)
    return bool(
        np.count_nonzero(np.diff(cs)) >= MULTISET_MIN // 2
        and np.array_equal(cs, np.sort(r, axis=None))
    )
