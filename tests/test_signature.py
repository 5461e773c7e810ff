"""OpenSSF Model Signing: model.sig files made by the real `model_signing` (keys generated here),
read by the gate's own parser, compared with the files and the manifest, and verified through the
`signing` extra; then tampered with (a file, a digest in model.sig, the manifest, the key) and
replaced by hostile bundles."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import model_signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gate import signature, signing
from gate.cli import main
from gate.findings import Finding, Report
from gate.reporters import cyclonedx
from tests.helpers import artifact_yaml, check, pointer, rules_of, write_st

HEAD = "version: 1\nmodel:\n  name: acme/signed\n  license: mit\n  origin: scratch\n"


def keypair(folder: Path, name: str = "key") -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def sign(root: Path, private: Path, **hashing: Any) -> None:
    """model_signing's key method, as its CLI signs a folder (the signature itself ignored)."""
    config = model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"])
    if hashing.pop("shards", False):
        config = config.use_shard_serialization(**hashing)
    elif hashing:
        config = config.use_file_serialization(**hashing)
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).set_hashing_config(
        config
    ).sign(root, root / "model.sig")


def signed_model(tmp_path: Path, policy: str = "", **hashing: Any) -> tuple[Path, Path]:
    """A model with its weights and config signed, then its manifest written (the public key
    is in the repository: policy `public_key: keys/signer.pub.pem` verifies with it)."""
    keys = tmp_path / "keys"
    keys.mkdir(parents=True)
    private, public = keypair(keys, "signer")
    root = tmp_path / "m"
    write_st(root / "model.safetensors", seed=1)
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "keys").mkdir()
    (root / "keys" / "signer.pub.pem").write_bytes(public.read_bytes())
    sign(root, private, **hashing)
    manifest(root, policy)
    return root, private


def manifest(root: Path, policy: str) -> None:
    body = (
        HEAD + artifact_yaml(root, "model.safetensors") + (f"policy:\n{policy}" if policy else "")
    )
    (root / "provenance.yaml").write_text(body)


KEY = "  signature:\n    required: true\n    public_key: keys/signer.pub.pem\n"


def payload(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    bundle = json.loads((root / "model.sig").read_text())
    return bundle, json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))


def rewrite(root: Path, bundle: dict[str, Any], statement: dict[str, Any], *, root_digest: bool):
    """model.sig with another statement (and the root digest recomputed when asked: the
    signature then no longer verifies, but the digests are self-consistent)."""
    if root_digest:
        h = hashlib.sha256()
        for r in statement["predicate"]["resources"]:
            h.update(bytes.fromhex(r["digest"]))
        statement["subject"][0]["digest"]["sha256"] = h.hexdigest()
    encoded = base64.b64encode(json.dumps(statement).encode()).decode()
    bundle["dsseEnvelope"]["payload"] = encoded
    (root / "model.sig").write_text(json.dumps(bundle))


def signature_rules(report: Report) -> list[str]:
    return [r for r in rules_of(report) if r.startswith("PG9")]


def sig(report: Report) -> list[Finding]:
    """The signature check's findings (a scratch claim without references adds notes)."""
    return [f for f in report.findings if f.rule.startswith("PG9")]


def test_a_signed_model_verifies_with_its_key(tmp_path: Path) -> None:
    root, _ = signed_model(tmp_path, KEY)
    report = check(root)
    assert signature_rules(report) == [] and report.exit_code == 0


def test_without_a_key_the_digests_are_compared_and_the_gap_said(tmp_path: Path) -> None:
    root, _ = signed_model(tmp_path, "  signature: required\n")
    report = check(root)
    assert signature_rules(report) == ["PG905"] and report.exit_code == 0
    (note,) = sig(report)
    assert note.severity == "warning" and "names no public_key" in note.message
    assert check(root, strict=True).exit_code == 1  # --strict: a check that could not run


def test_a_tampered_weight_file_is_caught_twice(tmp_path: Path) -> None:
    root, _ = signed_model(tmp_path, KEY)
    write_st(root / "model.safetensors", seed=2)
    report = check(root)
    assert "PG903" in signature_rules(report) and "PG204" in rules_of(report)
    (f,) = [f for f in report.findings if f.rule == "PG903"]
    assert f.location.path == "provenance.yaml" and f.location.line == 7  # its declaration
    assert f.declared is not None and f.declared.startswith("sha256:")


def test_a_tampered_undeclared_file_is_located_on_the_signature(tmp_path: Path) -> None:
    root, _ = signed_model(tmp_path, KEY)
    (root / "config.json").write_text('{"model_type": "gpt2"}')
    report = check(root)
    (f,) = [f for f in report.findings if f.rule == "PG903"]
    assert f.location.path == "model.sig" and "config.json" in f.message


def test_a_tampered_digest_in_model_sig(tmp_path: Path) -> None:
    root, _ = signed_model(tmp_path, KEY)
    bundle, statement = payload(root)
    for r in statement["predicate"]["resources"]:
        if r["name"] == "model.safetensors":
            r["digest"] = "0" * 64
    rewrite(root, dict(bundle), statement, root_digest=True)
    report = check(root)
    # the file no longer matches what model.sig says, the manifest disagrees with it, and
    # the signature does not verify over the edited payload
    assert signature_rules(report) == ["PG903", "PG904", "PG906"]
    # without recomputing the root digest, the bundle is inconsistent before any signature
    rewrite(root, bundle, statement, root_digest=False)
    statement["subject"][0]["digest"]["sha256"] = "1" * 64
    rewrite(root, bundle, statement, root_digest=False)
    (f,) = sig(check(root))
    assert f.rule == "PG902" and "inconsistent" in f.message


def test_a_tampered_manifest(tmp_path: Path) -> None:
    root, _ = signed_model(tmp_path, KEY)
    text = (root / "provenance.yaml").read_text()
    actual = hashlib.sha256((root / "model.safetensors").read_bytes()).hexdigest()
    (root / "provenance.yaml").write_text(text.replace(actual, "ab" * 32))
    report = check(root)
    assert signature_rules(report) == ["PG904"]
    (f,) = [f for f in report.findings if f.rule == "PG904"]
    assert f.location.line == 9 and f.declared == "ab" * 32  # the sha256 line


def test_another_key_does_not_verify(tmp_path: Path) -> None:
    root, _ = signed_model(tmp_path, KEY)
    _, other = keypair(tmp_path, "other")
    (root / "keys" / "signer.pub.pem").write_bytes(other.read_bytes())
    changed, refused = sig(check(root))  # the key file itself was signed
    assert changed.rule == "PG903" and "keys/signer.pub.pem" in changed.message
    assert refused.rule == "PG906" and "does not verify" in refused.message


def certificates(folder: Path, ca_name: str) -> tuple[Path, Path, Path]:
    """A CA (self-signed) and a code-signing leaf it issued: (CA, leaf, leaf's private key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)

    def cert(subject: str, key: Any, issuer_key: Any, ca: bool) -> x509.Certificate:
        usage = (False,) * 5 + (True, True) if ca else (True,) + (False,) * 6
        built = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(ca_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - day)
            .not_valid_after(now + 30 * day)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(*usage, False, False), critical=True)
        )
        if not ca:
            eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING])
            built = built.add_extension(eku, critical=False)
        return built.sign(issuer_key, hashes.SHA256())

    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    out = folder / f"{ca_name}.pem", folder / f"{ca_name}-leaf.pem", folder / f"{ca_name}-key.pem"
    out[0].write_bytes(cert(ca_name, ca_key, ca_key, True).public_bytes(serialization.Encoding.PEM))
    leaf = cert("signer", leaf_key, ca_key, False)
    out[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    out[2].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return out


def test_a_certificate_signature_verifies_against_its_chain_only(tmp_path: Path) -> None:
    ca, leaf, key = certificates(tmp_path, "acme-ca")
    root = tmp_path / "m"
    write_st(root / "model.safetensors", seed=1)
    (root / "keys").mkdir()
    (root / "keys" / "ca.pem").write_bytes(ca.read_bytes())
    hashing = model_signing.hashing.Config().set_ignored_paths(paths=["model.sig", "keys"])
    model_signing.signing.Config().use_certificate_signer(
        private_key=key, signing_certificate=leaf, certificate_chain=[ca]
    ).set_hashing_config(hashing).sign(root, root / "model.sig")
    manifest(root, "  signature:\n    certificate_chain: [keys/ca.pem]\n")
    assert sig(check(root)) == []
    other, _, _ = certificates(tmp_path, "other-ca")
    (root / "keys" / "ca.pem").write_bytes(other.read_bytes())
    (f,) = sig(check(root))
    assert f.rule == "PG906" and f.declared == "a certificate chaining to keys/ca.pem"


def test_a_key_outside_the_repository_or_unloadable_is_refused(tmp_path: Path) -> None:
    root, _ = signed_model(tmp_path, KEY.replace("keys/signer.pub.pem", "../keys/signer.pub.pem"))
    (f,) = sig(check(root))
    assert f.rule == "PG906" and f.location.line == 14  # policy.signature.public_key
    (root / "keys" / "signer.pub.pem").write_text("not a key")
    manifest(root, KEY)
    (f,) = [f for f in sig(check(root)) if f.rule != "PG903"]
    assert f.rule == "PG906" and "cannot be verified" in f.message


def test_without_the_signing_extra_the_signature_is_not_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = signed_model(tmp_path, KEY)
    monkeypatch.setitem(sys.modules, "model_signing._signing", None)  # import fails
    (f,) = sig(check(root))
    assert f.rule == "PG905" and "signing extra" in f.message and f.severity == "warning"


def test_a_required_signature_that_is_missing(tmp_path: Path) -> None:
    root, _ = signed_model(tmp_path, KEY)
    (root / "model.sig").unlink()
    (f,) = sig(check(root))
    assert f.rule == "PG901" and f.location.line == 12  # policy.signature
    manifest(root, "")  # optional: nothing to compare, nothing said
    assert sig(check(root)) == []


def test_unsigned_files_are_named(tmp_path: Path) -> None:
    root, _ = signed_model(tmp_path, KEY)
    (root / "notes.txt").write_text("added after signing")
    (f,) = sig(check(root))
    assert f.rule == "PG907" and f.severity == "warning" and f.details == ("notes.txt",)


def test_blake3_and_sharded_signatures(tmp_path: Path) -> None:
    root, _ = signed_model(tmp_path / "b3", KEY, hashing_algorithm="blake3")
    report = check(root)
    assert signature_rules(report) == []
    (model,) = cyclonedx.bom(report)["components"]
    hashes = {h["alg"] for h in model["components"][0]["hashes"]}
    assert hashes == {"SHA-256", "BLAKE3"}  # the BOM carries the BLAKE3 the check computed
    root, _ = signed_model(tmp_path / "sh", KEY, shards=True, shard_size=1000)
    assert signature.read(str(root / "model.sig")).method == "shards"
    assert signature_rules(check(root)) == []
    data = bytearray((root / "model.safetensors").read_bytes())
    data[-1] ^= 1  # the last shard only
    (root / "model.safetensors").write_bytes(bytes(data))
    found = [f for f in check(root).findings if f.rule == "PG903"]
    assert len(found) == 1 and f":{len(data) // 1000 * 1000}:{len(data)}" in found[0].message


def test_an_lfs_pointer_checkout_compares_the_oid(tmp_path: Path) -> None:
    root, _ = signed_model(tmp_path, KEY)
    content = (root / "model.safetensors").read_bytes()
    (root / "model.safetensors").write_bytes(pointer(content))
    assert "PG903" not in rules_of(check(root))  # the oid is the signed SHA-256
    config = (root / "config.json").read_bytes()
    (root / "config.json").write_bytes(pointer(config))  # undeclared, sniffed as a pointer
    assert "PG903" not in rules_of(check(root))
    (root / "config.json").write_bytes(pointer(b"other content"))
    assert "PG903" in rules_of(check(root))
    root, _ = signed_model(tmp_path / "b3", KEY, hashing_algorithm="blake3")
    (root / "model.safetensors").write_bytes(pointer((root / "model.safetensors").read_bytes()))
    assert "PG908" in rules_of(check(root))  # a BLAKE3 digest cannot be compared with an oid


HOSTILE: list[tuple[str, bytes]] = [
    ("not JSON", b'{"mediaType": '),
    ("nested", b"[" * 100_000),
    ("not a bundle", b'{"mediaType": "text/plain"}'),
    ("no envelope", b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}'),
]


def _bundle(statement: Any, **envelope: Any) -> bytes:
    env = {
        "payloadType": "application/vnd.in-toto+json",
        "payload": base64.b64encode(json.dumps(statement).encode()).decode(),
        "signatures": [{"sig": "AA=="}],
        **envelope,
    }
    return json.dumps(
        {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "dsseEnvelope": env}
    ).encode()


def _statement(*resources: dict[str, str], method: str = "files") -> dict[str, Any]:
    h = hashlib.sha256()
    for r in resources:
        with contextlib.suppress(ValueError):  # a malformed digest: refused before the root
            h.update(bytes.fromhex(r["digest"]))
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "m", "digest": {"sha256": h.hexdigest()}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "serialization": {"method": method, "hash_type": "sha256", "allow_symlinks": False},
            "resources": list(resources),
        },
    }


def _res(name: str, digest: str = "ab" * 32, algorithm: str = "sha256") -> dict[str, str]:
    return {"name": name, "algorithm": algorithm, "digest": digest}


HOSTILE += [
    ("bad base64", _bundle({}, payload="***")),
    ("no signature", _bundle(_statement(), signatures=[])),
    ("escape", _bundle(_statement(_res("../../etc/passwd")))),
    ("absolute", _bundle(_statement(_res("/etc/passwd")))),
    ("twice", _bundle(_statement(_res("a"), _res("a")))),
    ("algorithm", _bundle(_statement(_res("a", algorithm="md5")))),
    ("digest", _bundle(_statement(_res("a", digest="zz")))),
    ("shard name", _bundle(_statement(_res("a:b", algorithm="sha256-sharded-9"), method="shards"))),
    ("predicate", _bundle({**_statement(), "predicateType": "https://example.com/x"})),
    ("payload type", _bundle(_statement(), payloadType="application/json")),
    ("statement type", _bundle({**_statement(), "_type": "https://in-toto.io/Statement/v0.1"})),
    ("two subjects", _bundle({**_statement(), "subject": [{}, {}]})),
    ("method", _bundle(_statement(method="layers"))),
    ("resource", _bundle({**_statement(), "predicate": {**_statement()["predicate"],
                                                        "resources": [3]}})),
    ("shard range", _bundle(_statement(_res("a:9:3", algorithm="sha256-sharded-9"),
                                       method="shards"))),
    ("compat subject", _bundle({"_type": "https://in-toto.io/Statement/v1", "subject": [3],
                                "predicateType": "https://model_signing/Digests/v0.1"})),
]  # fmt: skip


@pytest.mark.parametrize(("case", "data"), HOSTILE, ids=[c for c, _ in HOSTILE])
def test_hostile_signatures_are_located_errors(tmp_path: Path, case: str, data: bytes) -> None:
    root, _ = signed_model(tmp_path, KEY)
    (root / "model.sig").write_bytes(data)
    (f,) = sig(check(root))
    assert f.rule == "PG902" and f.location.path == "model.sig"
    if case == "not JSON":
        assert (f.location.line, f.location.column) == (1, 15)


def test_an_oversized_signature_is_not_read(tmp_path: Path) -> None:
    root, _ = signed_model(tmp_path, KEY)
    with open(root / "model.sig", "wb") as f:
        f.truncate(signature.MAX_SIGNATURE_BYTES + 1)
    (f,) = sig(check(root))
    assert f.rule == "PG902" and "limit" in f.message


def test_a_network_failure_is_not_a_refusal() -> None:
    try:
        try:
            raise ConnectionRefusedError("no route")
        except OSError as e:
            raise ValueError("TUF refresh failed") from e
    except ValueError as outer:
        with pytest.raises(signing.Unavailable):
            signing._unless_network(outer)
    signing._unless_network(ValueError("bad signature"))  # not a network failure: returns


def test_init_takes_the_signed_digests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = signed_model(tmp_path, KEY)
    (root / "provenance.yaml").unlink()
    (root / "README.md").write_text("---\nlicense: mit\n---\n")
    signed = hashlib.sha256((root / "model.safetensors").read_bytes()).hexdigest()
    write_st(root / "model.safetensors", seed=2)  # changed after signing
    assert main(["init", str(root)]) == 0
    text = (root / "provenance.yaml").read_text()
    assert "signature: required" in text and f"sha256: {signed}" in text
    assert "is not the one model.sig signed" in capsys.readouterr().err
    assert {"PG204", "PG903"} <= set(rules_of(check(root)))


def test_ignored_paths_outside_the_folder_ignore_nothing_and_refuse_nothing() -> None:
    statement = _statement()
    statement["predicate"]["serialization"]["ignore_paths"] = ["/abs/model/x", ".git", "../y"]
    assert signature.parse(_bundle(statement)).ignore_paths == (".git",)


def test_the_older_digests_predicate_is_read(tmp_path: Path) -> None:
    """model_signing 0.2's `Digests/v0.1` payload: the files are the subjects."""
    root, _ = signed_model(tmp_path, "  signature: required\n")
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [
            {"name": p, "digest": {"sha256": hashlib.sha256((root / p).read_bytes()).hexdigest()}}
            for p in ("model.safetensors", "config.json", "keys/signer.pub.pem")
        ],
        "predicateType": "https://model_signing/Digests/v0.1",
        "predicate": {},
    }
    (root / "model.sig").write_bytes(_bundle(statement))
    assert signature_rules(check(root)) == ["PG905"]  # compared; nothing names a key
    (root / "config.json").write_text("{}")
    assert signature_rules(check(root)) == ["PG903", "PG905"]


@pytest.mark.parametrize("network", [True, False])
def test_sigstore_identities_unreachable_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network: bool
) -> None:
    """Keyless signatures are verified by model_signing against Sigstore's public instance,
    which the tests never reach: its verifier is replaced by one failing as the real one does
    offline (a TUF refresh error caused by a connection error), or refusing."""
    from model_signing._signing import sign_sigstore

    def verifier(**_: Any) -> None:
        if not network:
            raise ValueError("identity mismatch")
        try:
            raise ConnectionError("Failed to resolve 'tuf-repo-cdn.sigstore.dev'")
        except ConnectionError as e:
            raise RuntimeError("Failed to refresh TUF metadata") from e

    monkeypatch.setattr(sign_sigstore, "Verifier", verifier)
    policy = "  signature:\n    identity: a@acme.example\n    oidc_issuer: https://issuer.example\n"
    root, _ = signed_model(tmp_path, policy)
    (f,) = sig(check(root))
    if network:
        assert f.rule == "PG905" and "could not be reached" in f.message
    else:
        assert f.rule == "PG906"
        assert f.declared == "Sigstore identity a@acme.example (https://issuer.example)"


def test_missing_signed_files_and_unsigned_declared_ones(tmp_path: Path) -> None:
    root, _ = signed_model(tmp_path, KEY)
    (root / "config.json").unlink()
    write_st(root / "extra.safetensors", seed=5)  # declared after signing
    body = (root / "provenance.yaml").read_text().replace("policy:\n", "")
    body = body.replace(KEY, "")
    extra = artifact_yaml(root, "extra.safetensors").removeprefix("artifacts:\n")
    (root / "provenance.yaml").write_text(body + extra + "policy:\n" + KEY)
    missing, unsigned = sig(check(root))  # not also PG907 for the declared file
    assert missing.rule == "PG903" and missing.message.endswith("but it is missing")
    assert unsigned.rule == "PG904" and "does not cover it" in unsigned.message


def test_an_unusable_signature_path(tmp_path: Path) -> None:
    root, _ = signed_model(tmp_path, "  signature:\n    file: ../outside.sig\n")
    (f,) = [x for x in check(root).findings if x.rule == "PG202"]
    assert f.rule == "PG202"
    (root / "model.sig").unlink()
    (root / "model.sig").mkdir()  # not a regular file
    manifest(root, KEY)
    (f,) = sig(check(root))
    assert f.rule == "PG902" and f.location.path == "model.sig"
