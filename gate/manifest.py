"""provenance.yaml -> Manifest; syntax and schema problems become findings at line:col."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable
from typing import Any, Literal, Protocol

from gate import paths, rules
from gate.errors import ManifestError
from gate.findings import Finding, Location
from gate.positions import MAX_YAML_BYTES, Positions
from gate.text import has_surrogates

MANIFEST_NAME = "provenance.yaml"
DEFAULT_FORMATS = ("safetensors", "gguf", "onnx")  # data, never code

Origin = Literal["scratch", "derived"]


@dataclasses.dataclass(frozen=True)
class BaseModel:
    relation: str
    id: str | None = None
    path: str | None = None
    revision: str | None = None
    license: str | None = None
    weight: float | None = None

    @property
    def name(self) -> str:
        return self.id or self.path or "?"


@dataclasses.dataclass(frozen=True)
class Artifact:
    path: str
    index: int
    size: int | None = None
    sha256: str | None = None
    tensors_digest: str | None = None
    format: str | None = None


@dataclasses.dataclass(frozen=True)
class SignaturePolicy:
    """policy.signature: whether a model.sig must be there, where, and what verifies it."""

    required: bool = False
    file: str = "model.sig"
    public_key: str | None = None
    certificate_chain: tuple[str, ...] = ()
    identity: str | None = None
    oidc_issuer: str | None = None

    @property
    def verifies(self) -> bool:
        """Whether a key, certificate chain or identity is named to verify the signature."""
        return bool(self.public_key or self.certificate_chain or self.identity)


@dataclasses.dataclass(frozen=True)
class Policy:
    allowed_formats: tuple[str, ...] = DEFAULT_FORMATS
    license_allow: tuple[str, ...] | None = None
    license_deny: tuple[str, ...] = ()
    commercial_use_required: bool = False
    lineage_strict: bool = False
    probe: bool = False  # run the logit probe against local bases and references (torch extra)
    references: tuple[str, ...] = ()
    index: tuple[str, ...] = ()  # pack index folders, relative to the repository
    bundled_index: bool = True  # also the index shipped with the gate (gate/data/index)
    signature: SignaturePolicy = SignaturePolicy()


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A schema-valid manifest, with the positions of everything it declares."""

    display_path: str
    name: str
    license: str
    origin: Origin
    card: str
    license_name: str | None
    license_link: str | None
    commercial_use: bool | None
    base_models: tuple[BaseModel, ...]
    artifacts: tuple[Artifact, ...]
    policy: Policy
    ignore: tuple[str, ...]
    positions: Positions = dataclasses.field(repr=False, compare=False)

    def locate(self, *path: str | int, key: bool = False) -> Location:
        """The manifest location of a declared value (or its key)."""
        line, col = self.positions.locate(path, key=key)
        return Location(self.display_path, line, col)

    @property
    def claims_lineage(self) -> bool:
        """Whether a lineage test will compare weights (a base model, or a scratch claim with
        references): its exact tier then wants the artifacts' per-tensor digests."""
        return bool(self.base_models) or (self.origin == "scratch" and bool(self.policy.references))


def declared_reads(plain: Any) -> tuple[list[str], bool]:
    """The artifact paths a parsed but not yet validated document declares, and whether it
    claims lineage (as Manifest.claims_lineage), read defensively. Only for starting reads
    early (Scanner.prefetch): a wrong answer here costs a second read, never a wrong result."""

    def get(value: Any, key: str) -> Any:
        return value.get(key) if isinstance(value, dict) else None

    artifacts = get(plain, "artifacts")
    declared = [
        a["path"]
        for a in (artifacts if isinstance(artifacts, list) else [])
        if isinstance(get(a, "path"), str) and not has_surrogates(a["path"])
    ]
    references = get(get(get(plain, "policy"), "lineage"), "references")
    scratch = get(get(plain, "model"), "origin") == "scratch"
    return declared, bool(get(plain, "base_models")) or (scratch and bool(references))


@functools.cache
def schema(name: str = "manifest.v1.schema.json") -> dict[str, Any]:
    """A JSON Schema shipped with the package."""
    from importlib import resources  # pulls in pathlib: only when a schema is needed

    text = resources.files("gate").joinpath("schemas", name).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def read_bytes(path: str, display: str) -> bytes:
    """Read a manifest's bytes, refusing non-files and oversized files before reading them."""
    import os
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ManifestError(
            "no manifest found",
            where=display,
            hint="run `provenance-gate init` to scaffold one, or pass --manifest",
        ) from None
    except OSError as e:
        raise ManifestError(f"cannot read the manifest: {e.strerror}", where=display) from None
    if not stat.S_ISREG(st.st_mode):
        raise ManifestError("the manifest is not a regular file", where=display)
    if st.st_size > MAX_YAML_BYTES:
        raise ManifestError(
            f"the manifest is {st.st_size} bytes, over the {MAX_YAML_BYTES}-byte limit",
            where=display,
            hint="per-tensor detail belongs in the lock file, not in the manifest",
        )
    try:
        with paths.open_regular(path) as f:
            return paths.read_capped(f, MAX_YAML_BYTES)
    except OSError as e:
        raise ManifestError(f"cannot read the manifest: {e.strerror}", where=display) from None


class Memo(Protocol):
    """Remembers the outcome of deterministic work on exact bytes (see cache.StatCache)."""

    def memo_get(self, kind: str, data: bytes) -> str | None: ...

    def memo_put(self, kind: str, data: bytes, payload: str) -> None: ...


def parse(
    data: bytes,
    display: str,
    memo: Memo | None = None,
    early: Callable[[Any], None] | None = None,
) -> tuple[Manifest | None, list[Finding]]:
    """Parse and validate manifest bytes; a None manifest comes with at least one finding.

    With a memo, bytes already seen valid skip YAML parsing and schema validation entirely (a
    warm pre-commit run then never imports ruamel.yaml or jsonschema). early: called with the
    parsed document before validation (which imports jsonschema: ~40 ms), to start work that
    can overlap it.
    """
    if memo is not None:
        hit = memo.memo_get("manifest", data)
        if hit is not None:
            cached = json.loads(hit)
            if early is not None:
                early(cached["plain"])
            return _build(cached["plain"], Positions.from_json(cached["positions"]), display), []
    from gate import yamlio

    text, problem = yamlio.decode(data)
    doc: Any = None
    positions = Positions()
    if text is not None:
        doc, positions, problem = yamlio.load(text)
    if problem is not None:
        rule = "PG103" if problem.kind == "unsafe" else "PG101"
        loc = Location(display, problem.line, problem.column)
        expected = "well-formed YAML" if rule == "PG101" else "plain YAML (no aliases or tags)"
        return None, [
            rules.RULES[rule].finding(
                loc, problem.message, declared=expected, found=problem.message
            )
        ]
    plain = yamlio.to_plain(doc)
    if early is not None:
        early(plain)
    findings = validate(plain, positions, display)
    if findings:
        return None, findings
    if memo is not None:
        payload = {"plain": plain, "positions": positions.to_json()}
        memo.memo_put("manifest", data, json.dumps(payload, ensure_ascii=False))
    return _build(plain, positions, display), []


def validate(plain: Any, positions: Positions, display: str) -> list[Finding]:
    """JSON Schema validation, every error located at the manifest's line and column."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    out: list[Finding] = _invalid_text(plain, (), positions, display)
    seen: set[tuple[int, int, str]] = set()
    for error in validator.iter_errors(plain):
        for path, message, value in _explain(error):
            line, col = positions.locate(path, key=message.startswith("unexpected key"))
            if (line, col, message) in seen:
                continue
            seen.add((line, col, message))
            where = _dotted(path)
            out.append(
                rules.PG102.finding(
                    Location(display, line, col),
                    f"{where}: {message}" if where else message,
                    declared=_short(value),
                    found=f"schema: {message}",
                    hint="see schemas/manifest.v1.schema.json for every field",
                )
            )
    out.sort(key=lambda f: (f.location.line, f.location.column))
    return out


def _invalid_text(
    value: Any, path: tuple[str | int, ...], positions: Positions, display: str
) -> list[Finding]:
    """PG102 for strings that are not valid Unicode (YAML `\\ud800` escapes make lone
    surrogates, which no path, license or report can carry)."""
    if isinstance(value, str):
        if not has_surrogates(value):
            return []
        line, col = positions.locate(path)
        return [
            rules.PG102.finding(
                Location(display, line, col),
                f"{_dotted(path) or 'value'}: not valid Unicode (a lone surrogate)",
                declared=value,
                found="schema: a string must be valid Unicode",
                hint="write the character itself, or remove the \\u escape",
            )
        ]
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    out: list[Finding] = []
    for key, item in items:
        out += _invalid_text(item, (*path, key), positions, display)
    return out


def _explain(error: Any) -> list[tuple[tuple[str | int, ...], str, Any]]:
    """Turn one jsonschema error into (path, human message, offending value) triples."""
    path = tuple(error.absolute_path)
    schema_path = list(error.absolute_schema_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        return [
            ((*path, k), f"unexpected key `{k}` (allowed: {', '.join(sorted(allowed))})", k)
            for k in extra
        ]
    if "allOf" in schema_path and schema_path[:2] == ["allOf", 0]:
        return [
            (
                ("model", "origin"),
                "origin `derived` needs at least one entry in base_models",
                "derived",
            )
        ]
    if "allOf" in schema_path and schema_path[:2] == ["allOf", 1]:
        return [(("base_models",), "origin `scratch` cannot list base_models", error.instance)]
    if error.validator == "oneOf":  # only base models use oneOf
        return [
            (path, "declare exactly one of `id` (Hub) or `path` (local folder)", error.instance)
        ]
    if error.validator == "required":
        return [(path, error.message.replace("'", "`"), error.instance)]
    return [(path, _in_yaml_terms(error, path), error.instance)]


_KINDS = {
    "object": "a mapping (key: value)",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing (null)",
}


def _yaml(value: Any, limit: int = 40) -> str:
    """A value as YAML spells it (null, true, [1, 2]), in backticks, shortened."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool):
        text = json.dumps(value)
    else:
        text = json.dumps(value, default=str, ensure_ascii=False).replace('"', "")
    return "`" + (text if len(text) <= limit else text[: limit - 1] + "…") + "`"


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"the boolean {_yaml(value)}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{'a string' if isinstance(value, str) else 'the number'} {_yaml(value)}"


def _in_yaml_terms(error: Any, path: tuple[str | int, ...]) -> str:
    """A jsonschema error in the manifest author's terms: YAML values and kinds, not Python
    reprs (`None is not of type 'object'`)."""
    v, arg, inst = error.validator, error.validator_value, error.instance
    if v == "type":
        wanted = " or ".join(
            _KINDS.get(str(t), str(t)) for t in (arg if isinstance(arg, list) else [arg])
        )
        if not path and inst is None:
            return "the manifest is empty: expected a mapping with `version` and `model`"
        return f"expected {wanted}, found {_kind(inst)}"
    if v == "enum":
        return f"{_yaml(inst)} is not one of {', '.join(_yaml(a) for a in arg)}"
    if v == "const":
        return f"must be {_yaml(arg)}, found {_yaml(inst)}"
    if v == "pattern":
        return f"{_yaml(inst)} does not have the expected form (pattern {arg})"
    bound = "at least" if v.startswith("min") else "at most"
    if v in ("minItems", "maxItems"):
        return f"{bound} {arg} entries, found {len(inst)}"
    if v in ("minLength", "maxLength"):
        return f"{bound} {arg} characters, found {len(inst)}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
        return f"must be {sign[v]} {arg}, found {_yaml(inst)}"
    if v == "uniqueItems":
        return "entries must be unique"
    words = {"None": "null", "True": "true", "False": "false"}
    return re.sub(r"\b(None|True|False)\b", lambda m: words[m.group(1)], str(error.message))


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _build(plain: dict[str, Any], positions: Positions, display: str) -> Manifest:
    model = plain["model"]
    policy = plain.get("policy", {})
    licenses = policy.get("licenses", {})
    lineage = policy.get("lineage", {})
    allow = licenses.get("allow")
    return Manifest(
        display_path=display,
        name=model["name"],
        license=model["license"],
        origin=model["origin"],
        card=model.get("card", "README.md"),
        license_name=model.get("license_name"),
        license_link=model.get("license_link"),
        commercial_use=model.get("commercial_use"),
        base_models=tuple(
            BaseModel(
                relation=b["relation"],
                id=b.get("id"),
                path=b.get("path"),
                revision=b.get("revision"),
                license=b.get("license"),
                weight=b.get("weight"),
            )
            for b in plain.get("base_models", [])
        ),
        artifacts=tuple(
            Artifact(
                path=a["path"],
                index=i,
                size=a.get("size"),
                sha256=a.get("sha256"),
                tensors_digest=a.get("tensors_digest"),
                format=a.get("format"),
            )
            for i, a in enumerate(plain.get("artifacts", []))
        ),
        policy=Policy(
            allowed_formats=tuple(policy.get("allowed_formats", DEFAULT_FORMATS)),
            license_allow=None if allow is None else tuple(allow),
            license_deny=tuple(licenses.get("deny", ())),
            commercial_use_required=bool(policy.get("commercial_use_required", False)),
            lineage_strict=bool(lineage.get("strict", False)),
            probe=bool(lineage.get("probe", False)),
            references=tuple(lineage.get("references", ())),
            index=tuple(lineage.get("index", ())),
            bundled_index=bool(lineage.get("bundled_index", True)),
            signature=_signature_policy(policy.get("signature", "optional")),
        ),
        ignore=tuple(plain.get("ignore", ())),
        positions=positions,
    )


def _signature_policy(value: str | dict[str, Any]) -> SignaturePolicy:
    if isinstance(value, str):
        return SignaturePolicy(required=value == "required")
    return SignaturePolicy(
        required=bool(value.get("required", False)),
        file=value.get("file", "model.sig"),
        public_key=value.get("public_key"),
        certificate_chain=tuple(value.get("certificate_chain", ())),
        identity=value.get("identity"),
        oidc_issuer=value.get("oidc_issuer"),
    )
