"""OpenSSF Model Signing: a `model.sig` against the files and the manifest, and (with the
`signing` extra and a key, certificate chain or identity in policy.signature) verified.

The digests are compared with no extra installed: each signed file (or shard) against the file
as found (the SHA-256 the artifact check already computed when the signature used SHA-256;
otherwise one streamed read with the signature's engine), each declared artifact against its
signed digest, and the repository's other files against the signature's coverage. The signature
itself is verified through model_signing's own verifiers on the bytes this check read, and the
manifest they return must equal the one read here (two readers, one answer).
"""

from __future__ import annotations

import os

from gate import lfs, paths, rules, signature
from gate.errors import FormatError
from gate.evidence import Evidence, norm
from gate.findings import Finding, Location, Severity
from gate.manifest import Manifest, SignaturePolicy

MAX_LISTED = 20  # unsigned files named in one finding; the rest are counted


def check(ev: Evidence) -> list[Finding]:
    m, root = ev.manifest, ev.target.root
    policy = m.policy.signature
    real, problem = paths.resolve_inside(root, policy.file)
    at_policy = _policy_at(m, "file" if policy.file != "model.sig" else None)
    if problem is not None:
        return [
            rules.PG202.finding(
                at_policy, f"{policy.file}: {problem}", declared=policy.file, found=problem
            )
        ]
    if not os.path.lexists(real):
        if not policy.required:
            return []
        return [
            rules.PG901.finding(
                at_policy,
                f"policy.signature requires a model signature, and {policy.file} is missing",
                declared=f"a signature at {policy.file}",
                found="no such file",
            )
        ]
    try:
        signed = signature.read(real)
    except signature.SignatureError as e:
        return [
            rules.PG902.finding(
                Location(policy.file, e.line, e.column),
                f"{policy.file}: {e}",
                declared="an OpenSSF Model Signing bundle",
                found=str(e),
            )
        ]
    except OSError as e:
        why = e.strerror or str(e)
        return [
            rules.PG902.finding(
                Location(policy.file),
                f"{policy.file}: {why}",
                declared="a readable file",
                found=why,
            )
        ]
    compared = _Compare(ev, signed, policy.file)
    return compared.files() + compared.manifest() + compared.unsigned() + _verify(ev, signed)


class _Compare:
    def __init__(self, ev: Evidence, signed: signature.Signed, rel: str) -> None:
        self.ev, self.signed, self.rel = ev, signed, rel
        self.at = Location(rel)
        self.declared = {
            norm(a.path): (a.index, done)
            for a, done in zip(ev.manifest.artifacts, ev.artifacts, strict=True)
            if done is not None
        }
        self.by_file = signed.files()

    def _where(self, path: str, *key: str) -> Location:
        """A file's line in the manifest when it is declared, else the signature file."""
        if path not in self.declared:
            return self.at
        return self.ev.manifest.locate("artifacts", self.declared[path][0], *(key or ("path",)))

    def files(self) -> list[Finding]:
        out: list[Finding] = []
        gaps: list[str] = []
        root = self.ev.target.root
        for path, resources in sorted(self.by_file.items()):
            real, problem = paths.resolve_inside(root, path)
            if problem is None and not os.path.isfile(real):
                problem = "it is missing"
            if problem is not None:
                out.append(self._unusable(path, resources[0], problem))
                continue
            for r in resources:
                try:
                    found = self._digest(path, real, r)
                except OSError as e:
                    out.append(self._unusable(path, r, f"it cannot be read: {e.strerror or e}"))
                    break
                if found is None:
                    gaps.append(path)
                    break
                if found != r.digest:
                    out.append(
                        rules.PG903.finding(
                            self._where(path),
                            f"{r.name} differs from the {r.algorithm} digest {self.rel} signed",
                            declared=f"{r.algorithm}:{r.digest}",
                            found=f"{r.algorithm}:{found}",
                        )
                    )
        if gaps:
            out.append(
                rules.PG908.finding(
                    self.at,
                    f"{len(gaps)} signed file(s) are Git LFS pointers and the signature's"
                    " digests are not their SHA-256: not compared (check out the LFS content)",
                    declared="the signed digests",
                    found="not compared",
                    details=tuple(gaps[:MAX_LISTED]),
                )
            )
        return out

    def _unusable(self, path: str, r: signature.Resource, problem: str) -> Finding:
        """PG903 for a signed file that is missing, unreadable or not usable."""
        return rules.PG903.finding(
            self._where(path),
            f"{path} is signed in {self.rel}, but {problem}",
            declared=f"{r.algorithm}:{r.digest}",
            found=problem,
        )

    def _digest(self, path: str, real: str, r: signature.Resource) -> str | None:
        """The file's digest as the resource defines it (None: an LFS pointer checkout whose
        content cannot be hashed; its oid stands for a whole-file SHA-256)."""
        done = self.declared.get(path, (0, None))[1]
        scan = done.scan if done is not None else None
        whole_sha = r.algorithm == "sha256" and r.start is None
        pointer = scan.pointer if scan is not None else _pointer(real)  # undeclared: sniffed
        if pointer is not None:
            return pointer.oid if whole_sha else None
        if scan is not None and whole_sha:
            return scan.sha256
        found = signature.digest(real, r.algorithm, r.start or 0, r.end)
        if r.algorithm == "blake3" and r.start is None:
            self.ev.blake3[path] = found  # the BOM lists it (reporters/cyclonedx.py)
        return found

    def manifest(self) -> list[Finding]:
        out: list[Finding] = []
        for path, (index, _) in sorted(self.declared.items(), key=lambda kv: kv[1][0]):
            resources = self.by_file.get(path)
            if not resources:
                why = "ignores it" if self.signed.ignores(path) else "does not cover it"
                out.append(
                    rules.PG904.finding(
                        self._where(path),
                        f"{path} is declared, but {self.rel} {why}: its content is not signed",
                        declared=path,
                        found=f"not in {self.rel}",
                    )
                )
                continue
            sha = self.ev.manifest.artifacts[index].sha256
            (first,) = resources[:1]
            if sha is None or first.algorithm != "sha256" or first.start is not None:
                continue  # the file itself was compared with both
            if sha != first.digest:
                out.append(
                    rules.PG904.finding(
                        self._where(path, "sha256"),
                        f"{path}: the manifest's sha256 is not the one {self.rel} signed",
                        declared=sha,
                        found=f"signed: {first.digest}",
                    )
                )
        return out

    def unsigned(self) -> list[Finding]:
        """Files model_signing's verify would reject: neither signed nor ignored. The gate's
        own files are left out (a manifest written after signing; docs/signing.md)."""
        ev = self.ev
        own = {
            norm(os.path.relpath(p, ev.target.root))
            for p in (ev.target.manifest_path, ev.lock_file)
        }
        extra = [
            f
            for f in sorted(ev.files)
            if f not in self.by_file
            and f not in self.declared  # PG904 says it
            and f != norm(self.rel)
            and f not in own
            and not self.signed.ignores(f)
        ]
        if not extra:
            return []
        shown = extra[:MAX_LISTED] + (
            [f"... and {len(extra) - MAX_LISTED} more"] if len(extra) > MAX_LISTED else []
        )
        return [
            rules.PG907.finding(
                self.at,
                f"{len(extra)} file(s) of the repository are not covered by {self.rel}:"
                " `model_signing verify` rejects the model",
                declared=f"{len(self.by_file)} signed file(s)",
                found=f"{len(extra)} unsigned",
                details=tuple(shown),
            )
        ]


def _pointer(real: str) -> lfs.Pointer | None:
    """The Git LFS pointer an undeclared file is, if it is one (under 1 KiB, parsed strictly)."""
    try:
        with paths.open_regular(real) as f:
            data = paths.read_capped(f, lfs.MAX_POINTER_BYTES)
        return lfs.parse(data) if lfs.looks_like_pointer(data) else None
    except (OSError, FormatError):
        return None


def _policy_at(m: Manifest, key: str | None = None) -> Location:
    """policy.signature's location (or one of its keys'; the nearest ancestor when absent)."""
    return m.locate("policy", "signature", *((key,) if key else ()))


def _verify(ev: Evidence, signed: signature.Signed) -> list[Finding]:
    m, policy = ev.manifest, ev.manifest.policy.signature
    severity: Severity | None = "warning" if policy.required else None
    if not policy.verifies:
        return [
            rules.PG905.finding(
                _policy_at(m),
                f"{policy.file}: digests compared; who signed them is not verified:"
                " policy.signature names no public_key, certificate_chain or identity",
                declared="a signature verified by a named key, certificate chain or identity",
                found="not verified",
                severity=severity,
            )
        ]
    from gate import signing

    try:
        signing.verify(ev.target.root, signed, policy)
    except signing.Unavailable as e:
        why = f"{policy.file}: signature not verified: {e}"
        return [
            rules.PG905.finding(
                _policy_at(m), why, declared=_named(policy), found=str(e), severity=severity
            )
        ]
    except signing.Refused as e:
        return [
            rules.PG906.finding(
                _policy_at(m, e.key),
                f"{policy.file}: {e}",
                declared=_named(policy),
                found=str(e),
            )
        ]
    return []


def _named(policy: SignaturePolicy) -> str:
    if policy.public_key:
        return f"signed by the key {policy.public_key}"
    if policy.certificate_chain:
        return f"a certificate chaining to {', '.join(policy.certificate_chain)}"
    return f"Sigstore identity {policy.identity} ({policy.oidc_issuer})"
