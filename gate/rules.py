"""The rule catalogue: stable ids, names and default severities (SARIF rules come from here)."""

from __future__ import annotations

import dataclasses

from gate.findings import Finding, Location, Severity
from gate.text import storable


@dataclasses.dataclass(frozen=True)
class Rule:
    """A catalogued check outcome: a stable id, a name, a default severity, a one-line summary,
    and the usual fix (a finding may name a more specific one)."""

    id: str
    name: str
    severity: Severity
    summary: str
    hint: str | None = None

    def finding(
        self,
        at: Location,
        message: str,
        *,
        declared: object = None,
        found: object = None,
        hint: str | None = None,
        details: tuple[str, ...] = (),
        severity: Severity | None = None,
    ) -> Finding:
        """A finding of this rule at a location (hint: the rule's own unless given)."""
        # Names from the repository may not be valid Unicode (file names that are not UTF-8,
        # JSON surrogate escapes): a finding always is, so every report can be written.
        hint = hint if hint is not None else self.hint
        return Finding(
            rule=self.id,
            severity=severity or self.severity,
            message=storable(message),
            location=dataclasses.replace(at, path=storable(at.path)),
            declared=None if declared is None else storable(str(declared)),
            found=None if found is None else storable(str(found)),
            hint=None if hint is None else storable(hint),
            details=tuple(storable(d) for d in details),
        )


# 1xx: the manifest itself
PG101 = Rule("PG101", "manifest-syntax", "error", "The manifest is not well-formed YAML.")
PG102 = Rule("PG102", "manifest-schema", "error", "The manifest does not match the schema.")
PG103 = Rule(
    "PG103", "manifest-unsafe-yaml", "error", "The manifest uses YAML features refused for safety."
)
PG104 = Rule(
    "PG104",
    "lock-file-invalid",
    "error",
    "The lock file beside the manifest is unreadable.",
    hint="regenerate it with `provenance-gate lock`",
)
PG105 = Rule(
    "PG105",
    "lock-file-stale",
    "warning",
    "The lock file disagrees with the manifest.",
    hint="run `provenance-gate lock` to regenerate the lock file",
)
# 2xx: integrity of declared files
PG201 = Rule(
    "PG201",
    "artifact-missing",
    "error",
    "A declared artifact does not exist.",
    hint="add the file, or remove its entry from artifacts",
)
PG202 = Rule("PG202", "path-escapes-repository", "error", "A path leaves the repository.")
PG203 = Rule("PG203", "size-mismatch", "error", "A file's size differs from the declared size.")
PG204 = Rule(
    "PG204", "sha256-mismatch", "error", "A file's SHA-256 differs from the declared digest."
)
PG205 = Rule(
    "PG205",
    "tensors-mismatch",
    "error",
    "The tensor digest differs: tensors were changed.",
    hint="if the change is intended, run `provenance-gate lock`",
)
PG206 = Rule(
    "PG206",
    "undeclared-weight-file",
    "error",
    "A weight file is present but not declared.",
    hint="declare it (`provenance-gate init` adds undeclared weight files), delete it, or add a "
    "pattern to `ignore`",
)
PG207 = Rule(
    "PG207",
    "digest-not-declared",
    "error",
    "An artifact has no declared size or SHA-256.",
    hint="run `provenance-gate lock` to record sizes and digests",
)
PG208 = Rule("PG208", "duplicate-artifact", "error", "The same path is declared more than once.")
PG209 = Rule(
    "PG209",
    "lfs-pointer-only",
    "note",
    "Verified from a Git LFS pointer; content not read.",
    hint="check out with LFS content (actions/checkout `lfs: true`) for a full check",
)
PG210 = Rule(
    "PG210",
    "lfs-pointer-invalid",
    "error",
    "A Git LFS pointer file is malformed.",
    hint="run `git lfs pull`, or restore the pointer with `git lfs pointer --file`",
)
PG211 = Rule(
    "PG211",
    "changed-while-hashing",
    "error",
    "A file changed while it was being read.",
    hint="re-run the check when nothing is writing to the repository",
)
PG212 = Rule("PG212", "unreadable-file", "error", "A file could not be read.")
PG213 = Rule("PG213", "not-a-file", "error", "A declared artifact is not a regular file.")
PG214 = Rule(
    "PG214",
    "artifact-in-base-folder",
    "note",
    "A declared artifact lies in a base-model or reference folder: not this model's weights.",
    hint="remove it from `artifacts` if it is the base's file (base folders need no declaration)",
)
# 22x: sharded checkpoints
PG221 = Rule("PG221", "shard-index-invalid", "error", "A sharded checkpoint index is malformed.")
PG222 = Rule(
    "PG222", "shard-missing", "error", "A shard named by the index is absent or undeclared."
)
PG223 = Rule(
    "PG223", "shard-unindexed", "error", "A shard is present but the index does not name it."
)
PG224 = Rule(
    "PG224", "shard-tensor-mismatch", "error", "Index and shard headers disagree on tensors."
)
PG225 = Rule(
    "PG225",
    "shard-not-inspected",
    "note",
    "A shard's header could not be read to verify the index.",
)
# 3xx: formats and safety
PG301 = Rule(
    "PG301", "format-not-allowed", "error", "The weight format is not allowed by the policy."
)
PG302 = Rule(
    "PG302", "pickle-refused", "error", "A pickle-family file is refused (never unpickled)."
)
PG303 = Rule(
    "PG303",
    "pickle-not-scanned",
    "warning",
    "An allowed pickle's content was not present.",
    hint="check out with LFS content so the pickle can be scanned",
)
PG304 = Rule("PG304", "safetensors-header-invalid", "error", "A safetensors header is malformed.")
PG305 = Rule(
    "PG305", "format-mismatch", "error", "The declared format differs from the file content."
)
PG306 = Rule(
    "PG306", "format-not-inspected", "note", "The file's internal structure was not inspected."
)
PG307 = Rule(
    "PG307",
    "pickle-unsafe-global",
    "error",
    "A pickle imports a global outside the allowlist.",
    hint="regenerate it from trusted code, or convert it to safetensors",
)
PG308 = Rule(
    "PG308", "pickle-scan-failed", "error", "A pickle could not be scanned; it is refused."
)
PG309 = Rule("PG309", "gguf-header-invalid", "error", "A GGUF header is malformed.")
PG310 = Rule(
    "PG310",
    "polyglot",
    "error",
    "A file is valid as two formats, one of them a pickle that imports something.",
    hint="rebuild the file from trusted code with a writer of one format (safetensors)",
)
PG311 = Rule(
    "PG311",
    "executable-file",
    "error",
    "A file that is not a declared artifact would run code when a common loader reads it.",
    hint="delete the file, or convert it to a format that cannot run code (safetensors)",
)
PG312 = Rule(
    "PG312",
    "loader-disagrees",
    "error",
    "A checkpoint the static scan passed was refused or misread by torch's loader.",
    hint="regenerate it with torch.save from trusted code, or convert it to safetensors",
)
PG313 = Rule("PG313", "onnx-invalid", "error", "An ONNX model's protobuf structure is malformed.")
PG314 = Rule(
    "PG314",
    "onnx-external-data",
    "error",
    "An ONNX model's external data is outside its folder, missing, undeclared or too short.",
    hint="keep external data files beside the model and declare them as artifacts",
)
PG315 = Rule(
    "PG315",
    "onnx-custom-operators",
    "note",
    "An ONNX model uses operators outside the ONNX standard (and ONNX Runtime's contrib set).",
    hint="a runtime needs the custom operators' code, which the model does not carry",
)
PG401 = Rule(
    "PG401",
    "license-invalid",
    "error",
    "A license is neither a Hub license id nor a valid SPDX expression.",
    hint="use a Hub id (apache-2.0, llama2, gemma, other …) or an SPDX expression such as `MIT OR"
    " Apache-2.0`",
)
PG402 = Rule(
    "PG402",
    "license-unknown",
    "error",
    "A license is `unknown`: the terms are not known.",
    hint="declare the license the weights are released under",
)
PG403 = Rule(
    "PG403",
    "license-other-incomplete",
    "error",
    "`other` without a license name, or without a link to a file or URL.",
)
PG404 = Rule("PG404", "license-card-mismatch", "error", "The manifest and the model card disagree.")
PG405 = Rule(
    "PG405", "license-file-mismatch", "error", "The LICENSE file is another license's text."
)
PG406 = Rule(
    "PG406",
    "license-inheritance",
    "error",
    "The declared license or commercial-use claim contradicts a base model's license.",
)
PG407 = Rule(
    "PG407",
    "license-policy",
    "error",
    "A license breaks the manifest's license policy.",
    hint="change the license, the base model, or the policy (policy.licenses, "
    "policy.commercial_use_required)",
)
PG408 = Rule("PG408", "policy-invalid", "error", "The license policy is empty or contradictory.")
PG409 = Rule("PG409", "base-license-not-checked", "note", "A base model's license is not known.")
PG410 = Rule(
    "PG410",
    "license-attribution",
    "warning",
    "A base license's naming or attribution term is not met.",
)
PG411 = Rule(
    "PG411",
    "license-file-unrecognised",
    "warning",
    "The LICENSE file's text is not a known license: it does not confirm the declaration.",
)
PG501 = Rule("PG501", "lineage-not-checked", "note", "A lineage claim could not be fully verified.")
PG502 = Rule(
    "PG502", "scratch-contradicted", "error", "A `scratch` model shares weights with a reference."
)
PG503 = Rule("PG503", "copy-not-identical", "error", "A declared copy differs from its base model.")
PG504 = Rule(
    "PG504",
    "relation-is-copy",
    "warning",
    "A declared derivative is bit-identical to its base.",
    hint="declare `relation: copy`, or ship the changed weights",
)
PG505 = Rule(
    "PG505",
    "relation-mismatch",
    "error",
    "The weights show a different relation to a base model than the one declared.",
)
PG506 = Rule(
    "PG506",
    "base-independent",
    "error",
    "A declared base model is independent of this model's weights.",
    hint="declare the model this one was really derived from, or `origin: scratch` if it was "
    "trained from scratch",
)
PG507 = Rule(
    "PG507",
    "merge-weight-mismatch",
    "warning",
    "A declared merge coefficient differs from the one recovered from the weights.",
)
PG511 = Rule(
    "PG511",
    "scratch-not-tested",
    "note",
    "A `scratch` claim lists no reference models, so there is nothing to test it against.",
    hint="list the public models this one must be independent of (local folders or "
    "hf://owner/name@<commit>) in policy.lineage.references",
)
PG512 = Rule(
    "PG512",
    "distill-not-testable",
    "note",
    "A declared `distill` relation: distillation leaves no trace a weight test can read.",
    hint="set policy.lineage.probe: true to compare the two models' outputs (PG509)",
)
PG513 = Rule(
    "PG513",
    "scratch-matches-known-base",
    "error",
    "A `scratch` model derives from a known base of a pack index.",
    hint="declare `origin: derived` with the known base in base_models, and its license",
)
PG514 = Rule(
    "PG514",
    "undeclared-known-base",
    "error",
    "The weights derive from a known base of a pack index that the manifest does not declare.",
    hint="declare the known base in base_models (with its relation and license), or, when it"
    " is an ancestor of a declared base, declare that base's own lineage",
)
PG601 = Rule(
    "PG601",
    "card-not-checked",
    "note",
    "The model card was not found or not readable.",
    hint="add a README.md whose front matter declares license and base_model",
)
PG602 = Rule(
    "PG602",
    "card-base-mismatch",
    "error",
    "The card's `base_model` disagrees with the manifest's base models.",
)
PG603 = Rule(
    "PG603",
    "card-relation-mismatch",
    "error",
    "The card's `base_model_relation` disagrees with the manifest.",
    hint="declare the same relation in both (the card has no `copy` or `pruned`: leave "
    "base_model_relation out for those)",
)
PG508 = Rule(
    "PG508",
    "lineage-sampled",
    "note",
    "A relation to a Hub base was verified from a sample of its rows; how much was fetched.",
)
PG509 = Rule(
    "PG509",
    "logit-probe",
    "note",
    "The logit probe's figures against a base or reference, with an empirical p-value.",
)
PG510 = Rule(
    "PG510",
    "probe-disagrees",
    "warning",
    "The logit probe and the weight evidence disagree about dependence.",
    hint="the weight evidence is the verdict; a probe alone never convicts (docs/probe.md)",
)
# 7xx: `diff`, changes between two revisions
PG701 = Rule(
    "PG701", "artifact-added", "note", "A weight file is declared that the base did not have."
)
PG702 = Rule(
    "PG702", "artifact-removed", "warning", "A weight file of the base is no longer declared."
)
PG703 = Rule(
    "PG703",
    "weights-changed",
    "note",
    "A declared weight file changed; which tensors, per layer, from the lock files.",
)
PG704 = Rule(
    "PG704",
    "license-changed",
    "warning",
    "The model's license declaration changed.",
    hint="make sure the card, the LICENSE file and the base models agree (PG4xx)",
)
PG705 = Rule("PG705", "lineage-changed", "warning", "The origin or the base models changed.")
PG706 = Rule("PG706", "diff-base-missing", "note", "The base revision has no usable manifest.")
# 8xx: base models on the Hugging Face Hub
PG801 = Rule(
    "PG801",
    "hub-revision-unpinned",
    "error",
    "A Hub base model is not pinned to a full commit sha.",
)
PG802 = Rule(
    "PG802",
    "hub-base-unavailable",
    "note",
    "A Hub base could not be read (offline without a cache, unreachable): not checked.",
)
PG803 = Rule(
    "PG803", "hub-access-denied", "warning", "A Hub base is gated or private: not checked."
)
PG804 = Rule(
    "PG804",
    "hub-base-not-found",
    "error",
    "A Hub base repository or revision is missing.",
    hint="write hf://owner/name@<commit sha>",
)
PG805 = Rule(
    "PG805",
    "hub-cache-mismatch",
    "warning",
    "A cached copy of a Hub base file differs from the Hub's LFS sha256; it was not used.",
    hint="delete it from the cache (`hf cache delete`) so it is downloaded again",
)
# 9xx: OpenSSF Model Signing (model.sig)
PG901 = Rule(
    "PG901",
    "signature-missing",
    "error",
    "policy.signature requires a model signature, and the repository has none.",
    hint="sign the model: `model_signing sign key . --private_key key.pem --signature model.sig`"
    " (docs/signing.md)",
)
PG902 = Rule(
    "PG902",
    "signature-invalid",
    "error",
    "The model signature is not a well-formed OpenSSF Model Signing bundle.",
)
PG903 = Rule(
    "PG903",
    "signature-file-mismatch",
    "error",
    "A file differs from the digest the model signature holds, or a signed file is missing.",
    hint="the files changed after signing: sign the model again, or restore the signed files",
)
PG904 = Rule(
    "PG904",
    "signature-manifest-mismatch",
    "error",
    "The manifest and the model signature disagree about a declared file.",
    hint="run `provenance-gate lock` after signing, or sign the files the manifest declares",
)
PG905 = Rule(
    "PG905",
    "signature-not-verified",
    "note",
    "The model signature's digests were compared, but the signature itself was not verified.",
)
PG906 = Rule(
    "PG906",
    "signature-verification-failed",
    "error",
    "The model signature does not verify with the key, certificate chain or identity named.",
)
PG907 = Rule(
    "PG907",
    "signature-unsigned-files",
    "warning",
    "Files of the repository that the model signature does not cover (model_signing's verify"
    " rejects them).",
    hint="sign the model again, or ignore those paths when signing",
)
PG908 = Rule(
    "PG908",
    "signature-not-compared",
    "note",
    "A signed file's digest could not be compared (a Git LFS pointer checkout).",
)

# Every rule, by id, in catalogue order (SARIF lists them so). The constants above are the
# names call sites use: `rules.PG201.finding(at, message, declared=..., found=...)`.
RULES: dict[str, Rule] = {r.id: r for r in list(globals().values()) if isinstance(r, Rule)}


# Checks that could not run: content only an LFS pointer (PG209; an allowed pickle unscanned,
# PG303), a shard header unread (PG225), a format whose inside is not inspected (PG306), lineage
# not verified, a Hub base unreachable or gated, a base license unknown, a model signature not
# verified or a signed digest not compared (PG905, PG908). Notes or warnings by
# default (offline work, pre-commit); errors under --strict (CI). The logit probe (PG509) is
# not here: it is never the verdict, the weight evidence is.
NOT_RUN = frozenset(
    {"PG209", "PG225", "PG303", "PG306", "PG409", "PG501", "PG802", "PG803", "PG905", "PG908"}
)
_STRICT = "--strict: a check that could not run fails the run"


def strict(finding: Finding) -> Finding:
    """The finding as --strict reports it: an error when it says a check could not run."""
    if finding.rule not in NOT_RUN or finding.severity == "error":
        return finding
    return dataclasses.replace(finding, severity="error", details=(*finding.details, _STRICT))
