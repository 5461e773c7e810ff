"""Verify a model signature's cryptography with model_signing (the `signing` extra).

model_signing's public `verify(model_path, signature_path)` hashes every file of the model again;
the gate has already compared every digest (gate/checks/signature.py), so only the signature is
verified here, by the same verifier classes that API uses (its `_signing` modules: the extra
pins model-signing to the 1.1 series for that reason). They are given the bytes the gate read
(a private temporary copy, so the file cannot change between the two reads), and the manifest
they return must equal the gate's reading of the same payload.
"""

from __future__ import annotations

import pathlib
import tempfile
from typing import Any

from gate import paths, pip_install
from gate.manifest import SignaturePolicy
from gate.signature import Signed

_NETWORK_MODULES = ("requests", "urllib3", "httpx", "tuf", "socket", "ssl")


class Unavailable(Exception):
    """The signature could not be verified here (the extra missing, Sigstore unreachable)."""


class Refused(Exception):
    """The signature does not verify; key: the policy.signature key that names the cause."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def verify(root: str, signed: Signed, policy: SignaturePolicy) -> None:
    """Returns when the signature verifies with policy's key, certificate chain or identity;
    raises Refused when it does not, Unavailable when it cannot be checked here."""
    try:
        from model_signing._signing import (
            sign_certificate,
            sign_ec_key,
            sign_sigstore,
            sign_sigstore_pb,
        )
    except ImportError:
        raise Unavailable(
            f"verifying needs the signing extra: `{pip_install('signing')}`"
        ) from None
    with tempfile.TemporaryDirectory(prefix="provenance-gate-sig-") as tmp:
        copy = pathlib.Path(tmp, "model.sig")
        copy.write_bytes(signed.raw)
        try:
            verifier: Any
            if policy.public_key:
                verifier = sign_ec_key.Verifier(_inside(root, policy.public_key, "public_key"))
                bundle: Any = sign_sigstore_pb.Signature.read(copy)
            elif policy.certificate_chain:
                chain = [_inside(root, c, "certificate_chain") for c in policy.certificate_chain]
                verifier = sign_certificate.Verifier(chain)
                bundle = sign_sigstore_pb.Signature.read(copy)
            else:
                verifier = sign_sigstore.Verifier(
                    identity=policy.identity or "", oidc_issuer=policy.oidc_issuer or ""
                )
                bundle = sign_sigstore.Signature.read(copy)
        except Refused:
            raise
        except Exception as e:  # a key or certificate the library cannot load, a bad bundle
            _unless_network(e)
            key = "public_key" if policy.public_key else "certificate_chain"
            raise Refused(f"cannot be verified: {_why(e)}", key) from None
        try:
            manifest = verifier.verify(bundle)
        except Exception as e:  # the library's verifiers raise ValueError and crypto errors
            _unless_network(e)
            raise Refused(f"the signature does not verify: {_why(e)}") from None
    theirs = {str(rd.identifier): rd.digest.digest_hex for rd in manifest.resource_descriptors()}
    mine = {r.name: r.digest for r in signed.resources}
    if theirs != mine:
        raise Refused("model_signing reads other digests from the signed payload than the gate")


def _inside(root: str, rel: str, key: str) -> pathlib.Path:
    real, problem = paths.resolve_inside(root, rel)
    if problem is not None:
        raise Refused(f"{rel}: {problem}", key)
    return pathlib.Path(real)


def _unless_network(e: BaseException) -> None:
    """Unavailable when e (or its cause) is a network failure: not the signature's fault."""
    seen: BaseException | None = e
    while seen is not None:
        module = type(seen).__module__.split(".")[0]
        if isinstance(seen, ConnectionError) or module in _NETWORK_MODULES:
            raise Unavailable(f"Sigstore could not be reached ({_why(seen)})") from None
        seen = seen.__cause__ or seen.__context__


def _why(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"[:300] if text else type(e).__name__
