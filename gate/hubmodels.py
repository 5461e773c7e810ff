"""The manifest's Hub models for one run: pinning, file lists, cards, and what went wrong.

Lineage (gate/lineage/verify.py) and licenses (gate/declarations.py) both need the pinned commit
of a Hub base (or of a Hub reference a `scratch` claim is tested against); this resolves it once,
and turns every Hub failure into one located finding per model (recorded here, added to the
report once), so a check that could not run says why.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from gate import card, pip_install, rules
from gate.findings import Finding, Location, Severity
from gate.hubclient import REPO_ID, SHA, Hub, HubError, HubFile
from gate.manifest import BaseModel, Manifest, Memo

HF_URI = re.compile(r"^hf://(?P<repo>[^@\s]+?)(?:@(?P<rev>[^@\s]+))?$")
MAX_ANCESTORS = 8  # models read up a card's base_model chain
_UNAVAILABLE = {
    "offline": "base unavailable offline",
    "unreachable": "the Hub is unreachable",
    "invalid": "the Hub's answer was unusable",
}


@dataclasses.dataclass(frozen=True)
class HubModel:
    """A model on the Hub that the manifest names, and where it names it."""

    key: str  # unique per manifest entry
    repo: str
    revision: str | None
    at: Location  # the entry
    revision_at: Location  # its revision (the entry when there is none)

    @property
    def declared(self) -> str:
        return f"{self.repo}@{self.revision or 'main'}"


def of_base(m: Manifest, i: int, base: BaseModel) -> HubModel:
    assert base.id is not None
    at = m.locate("base_models", i)
    rev_at = m.locate("base_models", i, "revision") if base.revision else at
    return HubModel(f"base_models.{i}", base.id, base.revision, at, rev_at)


def of_reference(m: Manifest, k: int, uri: str) -> HubModel | None:
    """`hf://owner/name@sha` in policy.lineage.references (None: a local folder)."""
    match = HF_URI.match(uri)
    if match is None:
        return None
    at = m.locate("policy", "lineage", "references", k)
    return HubModel(f"references.{k}", match["repo"], match["rev"], at, at)


class HubBases:
    def __init__(
        self,
        manifest: Manifest,
        connect: Callable[[], Hub] | None,
        memo: Memo | None = None,
    ) -> None:
        """connect: makes the Hub client when first needed (None: huggingface_hub missing)."""
        self.m, self.connect, self.memo = manifest, connect, memo
        self.findings: list[Finding] = []
        self._hub: Hub | None = None
        self._pins: dict[str, str | None] = {}
        self._files: dict[str, tuple[HubFile, ...] | None] = {}
        self._failed: set[str] = set()
        self.unverified: Severity = "error" if manifest.policy.lineage_strict else "note"

    @property
    def hub(self) -> Hub | None:
        if self._hub is None and self.connect is not None:
            self._hub = self.connect()
        return self._hub

    def pinned(self, model: HubModel) -> str | None:
        """The commit to verify against (None: cannot be known; a finding says why)."""
        if model.key not in self._pins:
            self._pins[model.key] = self._pin(model)
        return self._pins[model.key]

    def _pin(self, model: HubModel) -> str | None:
        if not REPO_ID.match(model.repo):
            self._failed.add(model.key)
            self.findings.append(
                rules.PG804.finding(
                    model.at,
                    f"{model.repo!r} is not a Hub model id (owner/name)",
                    declared=model.declared,
                    found="not a Hub model id",
                )
            )
            return None
        rev = model.revision
        if rev is not None and SHA.match(rev):
            return rev
        resolved: str | None = None
        why = ""
        if self.hub is None:
            why = f"; `{pip_install('hub')}` to look up the commit"
        else:
            try:
                resolved = self.hub.resolve(model.repo, rev)
            except HubError as e:
                why = f"; the commit could not be looked up ({e.message})"
        what = f"revision `{rev}` is not a full commit sha" if rev else "no revision"
        self.findings.append(
            rules.PG801.finding(
                model.revision_at,
                f"{model.repo}: {what} (a Hub model must be pinned to a commit){why}",
                declared=f"revision: {rev}" if rev else "(no revision)",
                found=f"{rev or 'main'} is {resolved}" if resolved else "not pinned",
                hint=f"pin it: {_pin_hint(model, resolved)}"
                if resolved
                else "pin the full 40-character commit sha of the model on the Hub",
            )
        )
        return resolved

    def files(self, model: HubModel) -> tuple[HubFile, ...] | None:
        """The model's files at its pinned commit (None: unavailable; a finding says why)."""
        if model.key in self._files:
            return self._files[model.key]
        sha = self.pinned(model)
        out = None
        if sha is not None:
            if self.hub is None:
                self.unavailable(model, f"needs `{pip_install('hub')}`")
            else:
                try:
                    out = self.hub.files(model.repo, sha)
                except HubError as e:
                    self.failed(model, e)
        self._files[model.key] = out
        return out

    def card(self, model: HubModel) -> card.Card | None:
        """The model's card at its pinned commit, if it can be read."""
        sha = self.pinned(model)
        if self.files(model) is None or self.hub is None or sha is None:
            return None
        try:
            data = self.hub.read_small(model.repo, sha, "README.md")
        except HubError as e:
            self.failed(model, e)
            return None
        if data is None:
            return None
        return card.from_bytes(data, f"{model.repo}@{sha[:12]}/README.md", self.memo)

    def ancestors(self, model: HubModel) -> list[tuple[str, str]]:
        """(license, where) of the models up the card's `base_model` chain (a fine-tune of a
        fine-tune of Llama 2 is bound by Llama 2's license), breadth first, at most
        MAX_ANCESTORS models. Cards do not pin their bases, so each is read at its current
        commit; an ancestor that cannot be read ends that branch of the chain, and the direct
        base's own license is still checked."""
        out: list[tuple[str, str]] = []
        first = self.card(model)
        queue: list[tuple[str, card.Card | None]] = [(model.repo, first)] if first else []
        seen = {model.repo}
        while queue and len(seen) <= MAX_ANCESTORS:
            child, found = queue.pop(0)
            parents, _ = card.strings(found.data.get("base_model") if found is not None else None)
            for repo in [p for p in parents if REPO_ID.match(p)]:
                if repo in seen or len(seen) > MAX_ANCESTORS or self.hub is None:
                    continue
                seen.add(repo)
                try:
                    sha = self.hub.resolve(repo, None)
                    data = self.hub.read_small(repo, sha, "README.md")
                except HubError:
                    continue
                parent = (
                    card.from_bytes(data, f"{repo}@{sha[:12]}/README.md", self.memo)
                    if (data is not None)
                    else None
                )
                value = parent.data.get("license") if parent is not None else None
                if isinstance(value, str):
                    out.append((value, f"{repo}, base model of {child}, card at {sha[:12]}"))
                queue.append((repo, parent))
        return out

    def failed(self, model: HubModel, e: HubError) -> None:
        """One finding per model for a Hub failure (later failures of it add none)."""
        if model.key in self._failed:
            return
        if e.kind in _UNAVAILABLE:
            self.unavailable(model, f"{_UNAVAILABLE[e.kind]}: {e.message}", e.hint)
            return
        self._failed.add(model.key)
        rule = "PG803" if e.kind == "denied" else "PG804"
        self.findings.append(
            rules.RULES[rule].finding(
                model.at,
                f"{model.repo}: {e.message}; not checked",
                declared=model.declared,
                found=e.message,
                hint=e.hint,
            )
        )

    def unavailable(self, model: HubModel, why: str, hint: str | None = None) -> None:
        if model.key in self._failed:
            return
        self._failed.add(model.key)
        self.findings.append(
            rules.PG802.finding(
                model.at,
                f"{model.repo}: not checked: {why}",
                declared=model.declared,
                found=f"not checked: {why}",
                hint=hint,
                severity=self.unverified,
            )
        )


def _pin_hint(model: HubModel, sha: str) -> str:
    if model.key.startswith("references."):
        return f"`hf://{model.repo}@{sha}`"
    return f"`revision: {sha}`"
