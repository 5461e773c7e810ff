"""OpenSSF Model Signing's `model.sig`, read without its library: the signed per-file digests.

A model.sig is a Sigstore bundle (JSON) whose DSSE envelope carries an in-toto Statement: the
model's name and root digest as subject, and under the predicate (`https://model_signing/
signature/v1.0`) the serialization used (`files` or `shards`, the hash, the paths ignored) and
one resource per file or shard: name, algorithm, digest. The older `Digests/v0.1` predicate
lists the files as subjects instead. Hand-written because the core stays free of the signing
stack (sigstore, cryptography, protobuf): reading the digests must work in a pre-commit
environment and on hostile input, so every size is capped, every field's type checked, and every
name must stay inside the repository. Verifying the signature itself is the `signing` extra's
job (gate/checks/signature.py, through model_signing's own verifiers).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import posixpath
import re
from typing import Any

from gate import paths

MAX_SIGNATURE_BYTES = 16 << 20
MAX_RESOURCES = 1_000_000
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
PREDICATE_TYPE_COMPAT = "https://model_signing/Digests/v0.1"
# model_signing's digest names: the engine, with `-sharded-<shard size>` for shards
HASHES = {"sha256": 64, "blake2b": 128, "blake3": 64}  # -> hex digits
_HEX = re.compile(r"^[0-9a-f]+$")


class SignatureError(Exception):
    """model.sig is not a readable model signature; line and column when JSON said where."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.line, self.column = line, column


@dataclasses.dataclass(frozen=True)
class Resource:
    """One signed file, or one byte range of it (shards: start <= offset < end)."""

    path: str
    algorithm: str  # sha256 | blake2b | blake3
    digest: str  # hex
    start: int | None = None
    end: int | None = None

    @property
    def name(self) -> str:
        return self.path if self.start is None else f"{self.path}:{self.start}:{self.end}"


@dataclasses.dataclass(frozen=True)
class Signed:
    """What a model.sig signs (as it says; `verify` establishes who signed it)."""

    model_name: str
    root_digest: str | None  # sha256 over the resources' digests (None: the v0.1 predicate)
    method: str  # files | shards
    ignore_paths: tuple[str, ...]
    resources: tuple[Resource, ...]
    key_material: str  # publicKey | certificate | x509CertificateChain | other
    raw: bytes  # the bundle as read: what the signing extra verifies

    def files(self) -> dict[str, list[Resource]]:
        """The resources of each signed file."""
        out: dict[str, list[Resource]] = {}
        for r in self.resources:
            out.setdefault(r.path, []).append(r)
        return out

    def ignores(self, rel: str) -> bool:
        """Whether the signer left rel out (an ignored path, or a file under an ignored folder)."""
        return any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in self.ignore_paths)


def read(real: str) -> Signed:
    """The signature at real (a path already resolved inside the repository); raises
    SignatureError on anything that is not a well-formed model signature, OSError when it
    cannot be read."""
    with paths.open_regular(real) as f:
        data = paths.read_capped(f, MAX_SIGNATURE_BYTES)
    if len(data) > MAX_SIGNATURE_BYTES:
        raise SignatureError(f"over the {MAX_SIGNATURE_BYTES}-byte limit")
    return parse(data)


def parse(data: bytes) -> Signed:
    bundle = _json(data, "the bundle")
    media = _get(bundle, "mediaType", str, "the bundle")
    if not media.startswith(BUNDLE_MEDIA_TYPE):
        raise SignatureError(f"mediaType {_short(media)} is not a Sigstore bundle's")
    envelope = _get(bundle, "dsseEnvelope", dict, "the bundle")
    payload_type = _get(envelope, "payloadType", str, "dsseEnvelope")
    if payload_type != PAYLOAD_TYPE:
        raise SignatureError(f"dsseEnvelope.payloadType is {_short(payload_type)}, not in-toto")
    signatures = _get(envelope, "signatures", list, "dsseEnvelope")
    if not signatures or not all(isinstance(s, dict) and "sig" in s for s in signatures):
        raise SignatureError("dsseEnvelope.signatures holds no signature")
    try:
        payload = base64.b64decode(_get(envelope, "payload", str, "dsseEnvelope"), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("dsseEnvelope.payload is not base64") from None
    statement = _json(payload, "the signed statement")
    kind = _get(statement, "_type", str, "the signed statement")
    if kind != STATEMENT_TYPE:
        raise SignatureError(
            f"the signed statement's _type is {_short(kind)}, not {STATEMENT_TYPE}"
        )
    material = bundle.get("verificationMaterial")
    key_material = next(
        (
            k
            for k in ("publicKey", "certificate", "x509CertificateChain")
            if isinstance(material, dict) and k in material
        ),
        "other",
    )
    predicate_type = _get(statement, "predicateType", str, "the signed statement")
    if predicate_type == PREDICATE_TYPE_COMPAT:
        return _compat(statement, key_material, data)
    if predicate_type != PREDICATE_TYPE:
        raise SignatureError(f"predicateType {_short(predicate_type)} is not a model signature's")
    return _v1(statement, key_material, data)


def _v1(statement: dict[str, Any], key_material: str, raw: bytes) -> Signed:
    subjects = _get(statement, "subject", list, "the signed statement")
    if len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise SignatureError("a model signature has exactly one subject, the model")
    name = _get(subjects[0], "name", str, "the subject")
    root = _hex(_get(_get(subjects[0], "digest", dict, "the subject"), "sha256", str, "digest"))
    predicate = _get(statement, "predicate", dict, "the signed statement")
    serialization = _get(predicate, "serialization", dict, "the predicate")
    method = _get(serialization, "method", str, "serialization")
    if method not in ("files", "shards"):
        raise SignatureError(f"serialization method {_short(method)} is not files or shards")
    ignored = serialization.get("ignore_paths", [])
    if not isinstance(ignored, list) or not all(isinstance(p, str) for p in ignored):
        raise SignatureError("serialization.ignore_paths is not a list of paths")
    items = _get(predicate, "resources", list, "the predicate")
    if len(items) > MAX_RESOURCES:
        raise SignatureError(f"over {MAX_RESOURCES} resources")
    resources = tuple(_resource(item, method) for item in items)
    h = hashlib.sha256()
    for r in resources:
        h.update(bytes.fromhex(r.digest))
    if h.hexdigest() != root:
        raise SignatureError(
            f"the subject's digest {root} is not the SHA-256 of the resources' digests"
            f" ({h.hexdigest()}): the signed manifest is inconsistent"
        )
    names = [r.name for r in resources]
    if len(set(names)) != len(names):
        raise SignatureError("a resource is listed twice")
    # an ignored path outside the folder ignores nothing here (the CLI may record absolute ones)
    ignore_paths = tuple(_clean(p, "") for p in ignored if _inside(p))
    return Signed(name, root, method, ignore_paths, resources, key_material, raw)


def _compat(statement: dict[str, Any], key_material: str, raw: bytes) -> Signed:
    subjects = _get(statement, "subject", list, "the signed statement")
    if len(subjects) > MAX_RESOURCES:
        raise SignatureError(f"over {MAX_RESOURCES} subjects")
    resources = []
    for s in subjects:
        if not isinstance(s, dict):
            raise SignatureError("a subject is not an object")
        path = _clean(_get(s, "name", str, "a subject"), "a subject's name")
        digest = _hex(_get(_get(s, "digest", dict, "a subject"), "sha256", str, "digest"))
        resources.append(Resource(path, "sha256", digest))
    return Signed("", None, "files", (), tuple(resources), key_material, raw)


def _resource(item: Any, method: str) -> Resource:
    if not isinstance(item, dict):
        raise SignatureError("a resource is not an object")
    name = _get(item, "name", str, "a resource")
    algorithm = _get(item, "algorithm", str, "a resource")
    engine, _, shard = algorithm.partition("-sharded-")
    if (
        engine not in HASHES
        or (method == "shards") != bool(shard)
        or (shard and not shard.isdigit())
    ):
        raise SignatureError(f"{_short(name)}: algorithm {_short(algorithm)} is not supported")
    digest = _get(item, "digest", str, "a resource")
    if len(digest) != HASHES[engine] or not _HEX.match(digest):
        raise SignatureError(f"{_short(name)}: {engine} digest {_short(digest)} is malformed")
    if method == "files":
        return Resource(_clean(name, "a resource's name"), engine, digest)
    parts = name.split(":")  # as model_signing splits it: a path with a colon is no shard's
    if len(parts) != 3:
        raise SignatureError(f"{_short(name)}: not a shard name (path:start:end)")
    path, start, end = parts
    if not (start.isdigit() and end.isdigit()) or int(start) >= int(end):
        raise SignatureError(f"{_short(name)}: not a shard name (path:start:end)")
    return Resource(_clean(path, "a shard's path"), engine, digest, int(start), int(end))


def _inside(name: str) -> bool:
    try:
        _clean(name, "")
    except SignatureError:
        return False
    return True


def _clean(name: str, what: str) -> str:
    """A signed path, which must name something inside the repository (POSIX, relative)."""
    norm = posixpath.normpath(name)
    bad = (
        not name
        or "\x00" in name
        or "\\" in name
        or name.startswith("/")
        or norm == ".."
        or norm.startswith("../")
    )
    if bad:
        raise SignatureError(f"{what} {_short(name)} leaves the repository")
    return norm


def _json(data: bytes, what: str) -> Any:
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as e:
        raise SignatureError(f"{what} is not JSON: {e.msg}", e.lineno, e.colno) from None
    except (ValueError, RecursionError):
        raise SignatureError(f"{what} is not JSON (undecodable or nested too deeply)") from None
    if not isinstance(doc, dict):
        raise SignatureError(f"{what} is not a JSON object")
    return doc


def _get(doc: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind):
        raise SignatureError(f"{where} has no {key} ({kind.__name__})")
    return value


def _hex(value: str) -> str:
    if len(value) != 64 or not _HEX.match(value):
        raise SignatureError(f"{_short(value)} is not a SHA-256 digest")
    return value


def _short(value: str, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def digest(real: str, algorithm: str, start: int = 0, end: int | None = None) -> str:
    """A file's (or a byte range's) digest by one of model_signing's engines, streamed."""
    import blake3

    h: Any = (
        hashlib.sha256()
        if algorithm == "sha256"
        else hashlib.blake2b()
        if algorithm == "blake2b"
        else blake3.blake3(max_threads=blake3.blake3.AUTO)  # as model_signing hashes it
    )
    size = 16 << 20 if algorithm == "blake3" else 1 << 20  # big updates feed BLAKE3's threads
    with paths.open_regular(real) as f:
        f.seek(start)
        left = None if end is None else end - start
        while left is None or left > 0:
            chunk = f.read(size if left is None else min(size, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return str(h.hexdigest())
