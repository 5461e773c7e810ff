"""The rule catalogue: stable ids, names and default severities (SARIF rules come from here)."""

from __future__ import annotations

import dataclasses

from gate.findings import Finding, Location, Severity
from gate.text import storable


@dataclasses.dataclass(frozen=True)
class Rule:
    id: str
    name: str
    severity: Severity
    summary: str


_RULES = [
    # 1xx: the manifest itself
    Rule("PG101", "manifest-syntax", "error", "The manifest is not well-formed YAML."),
    Rule("PG102", "manifest-schema", "error", "The manifest does not match the schema."),
    Rule(
        "PG103",
        "manifest-unsafe-yaml",
        "error",
        "The manifest uses YAML features refused for safety.",
    ),
    Rule("PG104", "lock-file-invalid", "error", "The lock file beside the manifest is unreadable."),
    Rule("PG105", "lock-file-stale", "warning", "The lock file disagrees with the manifest."),
    # 2xx: integrity of declared files
    Rule("PG201", "artifact-missing", "error", "A declared artifact does not exist."),
    Rule("PG202", "path-escapes-repository", "error", "A path leaves the repository."),
    Rule("PG203", "size-mismatch", "error", "A file's size differs from the declared size."),
    Rule("PG204", "sha256-mismatch", "error", "A file's SHA-256 differs from the declared digest."),
    Rule("PG205", "tensors-mismatch", "error", "The tensor digest differs: tensors were changed."),
    Rule("PG206", "undeclared-weight-file", "error", "A weight file is present but not declared."),
    Rule("PG207", "digest-not-declared", "error", "An artifact has no declared size or SHA-256."),
    Rule("PG208", "duplicate-artifact", "error", "The same path is declared more than once."),
    Rule("PG209", "lfs-pointer-only", "note", "Verified from a Git LFS pointer; content not read."),
    Rule("PG210", "lfs-pointer-invalid", "error", "A Git LFS pointer file is malformed."),
    Rule("PG211", "changed-while-hashing", "error", "A file changed while it was being read."),
    Rule("PG212", "unreadable-file", "error", "A file could not be read."),
    Rule("PG213", "not-a-file", "error", "A declared artifact is not a regular file."),
    Rule(
        "PG214",
        "artifact-in-base-folder",
        "note",
        "A declared artifact lies in a base-model or reference folder: not this model's weights.",
    ),
    # 22x: sharded checkpoints
    Rule("PG221", "shard-index-invalid", "error", "A sharded checkpoint index is malformed."),
    Rule("PG222", "shard-missing", "error", "A shard named by the index is absent or undeclared."),
    Rule("PG223", "shard-unindexed", "error", "A shard is present but the index does not name it."),
    Rule("PG224", "shard-tensor-mismatch", "error", "Index and shard headers disagree on tensors."),
    Rule(
        "PG225",
        "shard-not-inspected",
        "note",
        "A shard's header could not be read to verify the index.",
    ),
    # 3xx: formats and safety
    Rule("PG301", "format-not-allowed", "error", "The weight format is not allowed by the policy."),
    Rule("PG302", "pickle-refused", "error", "A pickle-family file is refused (never unpickled)."),
    Rule("PG303", "pickle-not-scanned", "warning", "An allowed pickle's content was not present."),
    Rule("PG304", "safetensors-header-invalid", "error", "A safetensors header is malformed."),
    Rule("PG305", "format-mismatch", "error", "The declared format differs from the file content."),
    Rule(
        "PG306", "format-not-inspected", "note", "The file's internal structure was not inspected."
    ),
    Rule(
        "PG307", "pickle-unsafe-global", "error", "A pickle imports a global outside the allowlist."
    ),
    Rule("PG308", "pickle-scan-failed", "error", "A pickle could not be scanned; it is refused."),
    Rule("PG309", "gguf-header-invalid", "error", "A GGUF header is malformed."),
    Rule(
        "PG310",
        "polyglot",
        "error",
        "A file is valid as two formats, one of them a pickle that imports something.",
    ),
    Rule(
        "PG311",
        "executable-file",
        "error",
        "A file that is not a declared artifact would run code when a common loader reads it.",
    ),
    Rule(
        "PG312",
        "loader-disagrees",
        "error",
        "A checkpoint the static scan passed was refused or misread by torch's loader.",
    ),
    Rule(
        "PG401",
        "license-invalid",
        "error",
        "A license is neither a Hub license id nor a valid SPDX expression.",
    ),
    Rule("PG402", "license-unknown", "error", "A license is `unknown`: the terms are not known."),
    Rule(
        "PG403",
        "license-other-incomplete",
        "error",
        "`other` without a license name, or without a link to a file or URL.",
    ),
    Rule("PG404", "license-card-mismatch", "error", "The manifest and the model card disagree."),
    Rule("PG405", "license-file-mismatch", "error", "The LICENSE file is another license's text."),
    Rule(
        "PG406",
        "license-inheritance",
        "error",
        "The declared license or commercial-use claim contradicts a base model's license.",
    ),
    Rule("PG407", "license-policy", "error", "A license breaks the manifest's license policy."),
    Rule("PG408", "policy-invalid", "error", "The license policy is empty or contradictory."),
    Rule("PG409", "base-license-not-checked", "note", "A base model's license is not known."),
    Rule(
        "PG410",
        "license-attribution",
        "warning",
        "A base license's naming or attribution term is not met.",
    ),
    Rule(
        "PG411",
        "license-file-unrecognised",
        "warning",
        "The LICENSE file's text is not a known license: it does not confirm the declaration.",
    ),
    Rule("PG501", "lineage-not-checked", "note", "A lineage claim could not be fully verified."),
    Rule(
        "PG502",
        "scratch-contradicted",
        "error",
        "A `scratch` model shares weights with a reference.",
    ),
    Rule("PG503", "copy-not-identical", "error", "A declared copy differs from its base model."),
    Rule(
        "PG504",
        "relation-is-copy",
        "warning",
        "A declared derivative is bit-identical to its base.",
    ),
    Rule(
        "PG505",
        "relation-mismatch",
        "error",
        "The weights show a different relation to a base model than the one declared.",
    ),
    Rule(
        "PG506",
        "base-independent",
        "error",
        "A declared base model is independent of this model's weights.",
    ),
    Rule(
        "PG507",
        "merge-weight-mismatch",
        "warning",
        "A declared merge coefficient differs from the one recovered from the weights.",
    ),
    Rule(
        "PG511",
        "scratch-not-tested",
        "note",
        "A `scratch` claim lists no reference models, so there is nothing to test it against.",
    ),
    Rule("PG601", "card-not-checked", "note", "The model card was not found or not readable."),
    Rule(
        "PG602",
        "card-base-mismatch",
        "error",
        "The card's `base_model` disagrees with the manifest's base models.",
    ),
    Rule(
        "PG603",
        "card-relation-mismatch",
        "error",
        "The card's `base_model_relation` disagrees with the manifest.",
    ),
    Rule(
        "PG508",
        "lineage-sampled",
        "note",
        "A relation to a Hub base was verified from a sample of its rows; how much was fetched.",
    ),
    Rule(
        "PG509",
        "logit-probe",
        "note",
        "The logit probe's figures against a base or reference, with an empirical p-value.",
    ),
    Rule(
        "PG510",
        "probe-disagrees",
        "warning",
        "The logit probe and the weight evidence disagree about dependence.",
    ),
    # 7xx: `diff`, changes between two revisions
    Rule(
        "PG701", "artifact-added", "note", "A weight file is declared that the base did not have."
    ),
    Rule(
        "PG702", "artifact-removed", "warning", "A weight file of the base is no longer declared."
    ),
    Rule(
        "PG703",
        "weights-changed",
        "note",
        "A declared weight file changed; which tensors, per layer, from the lock files.",
    ),
    Rule("PG704", "license-changed", "warning", "The model's license declaration changed."),
    Rule("PG705", "lineage-changed", "warning", "The origin or the base models changed."),
    Rule("PG706", "diff-base-missing", "note", "The base revision has no usable manifest."),
    # 8xx: base models on the Hugging Face Hub
    Rule(
        "PG801",
        "hub-revision-unpinned",
        "error",
        "A Hub base model is not pinned to a full commit sha.",
    ),
    Rule(
        "PG802",
        "hub-base-unavailable",
        "note",
        "A Hub base could not be read (offline without a cache, unreachable): not checked.",
    ),
    Rule("PG803", "hub-access-denied", "warning", "A Hub base is gated or private: not checked."),
    Rule("PG804", "hub-base-not-found", "error", "A Hub base repository or revision is missing."),
    Rule(
        "PG805",
        "hub-cache-mismatch",
        "warning",
        "A cached copy of a Hub base file differs from the Hub's LFS sha256; it was not used.",
    ),
]

RULES: dict[str, Rule] = {r.id: r for r in _RULES}


def make(
    rule_id: str,
    message: str,
    location: Location,
    *,
    declared: object = None,
    found: object = None,
    hint: str | None = None,
    details: tuple[str, ...] = (),
    severity: Severity | None = None,
) -> Finding:
    """Build a finding for a catalogued rule; unknown ids are a programming error."""
    rule = RULES[rule_id]
    # Names from the repository may not be valid Unicode (file names that are not UTF-8,
    # JSON surrogate escapes): a finding always is, so every report can be written.
    return Finding(
        rule=rule.id,
        severity=severity or rule.severity,
        message=storable(message),
        location=dataclasses.replace(location, path=storable(location.path)),
        declared=None if declared is None else storable(str(declared)),
        found=None if found is None else storable(str(found)),
        hint=None if hint is None else storable(hint),
        details=tuple(storable(d) for d in details),
    )


# Checks that could not run: content only an LFS pointer (PG209; an allowed pickle unscanned,
# PG303), a shard header unread (PG225), a format whose inside is not inspected (PG306), lineage
# not verified, a Hub base unreachable or gated, a base license unknown. Notes or warnings by
# default (offline work, pre-commit); errors under --strict (CI). The logit probe (PG509) is
# not here: it is never the verdict, the weight evidence is.
NOT_RUN = frozenset({"PG209", "PG225", "PG303", "PG306", "PG409", "PG501", "PG802", "PG803"})
_STRICT = "--strict: a check that could not run fails the run"


def strict(finding: Finding) -> Finding:
    """The finding as --strict reports it: an error when it says a check could not run."""
    if finding.rule not in NOT_RUN or finding.severity == "error":
        return finding
    return dataclasses.replace(finding, severity="error", details=(*finding.details, _STRICT))
