"""The manifest's Hub models for one run: pinning, file lists, cards, and what went wrong.

Lineage (gate/lineage/claims.py) and licenses (gate/checks/declarations.py) both need the pinned
commit of a Hub base (or of a Hub reference a `scratch` claim is tested against); this resolves
it once and returns every Hub failure as a located finding with the answer; the checks return
them with their own, and `check` keeps one per model (`once_per_model`), so a check that could
not run says why, once.
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


@dataclasses.dataclass(frozen=True)
class Lookup:
    """What the Hub said about one model: the commit to verify against and its files (None:
    cannot be known), and the findings saying why not (or that the model is not pinned)."""

    sha: str | None
    files: tuple[HubFile, ...] | None
    findings: tuple[Finding, ...]


class HubBases:
    """The Hub session of one run: each model is pinned and listed once (memoized), and every
    answer carries its findings; the caller returns them with its own, and `once_per_model`
    keeps one per model however many checks met the same failure."""

    def __init__(
        self,
        manifest: Manifest,
        connect: Callable[[], Hub] | None,
        memo: Memo | None = None,
    ) -> None:
        """connect: makes the Hub client when first needed (None: huggingface_hub missing)."""
        self.m, self.connect, self.memo = manifest, connect, memo
        self._hub: Hub | None = None
        self._lookups: dict[str, Lookup] = {}
        self.unverified: Severity = "error" if manifest.policy.lineage_strict else "note"

    @property
    def hub(self) -> Hub | None:
        if self._hub is None and self.connect is not None:
            self._hub = self.connect()
        return self._hub

    def files(self, model: HubModel) -> Lookup:
        """The model's pinned commit and its files there."""
        if model.key not in self._lookups:
            self._lookups[model.key] = self._look_up(model)
        return self._lookups[model.key]

    def _look_up(self, model: HubModel) -> Lookup:
        if not REPO_ID.match(model.repo):
            bad = rules.PG804.finding(
                model.at,
                f"{model.repo!r} is not a Hub model id (owner/name)",
                declared=model.declared,
                found="not a Hub model id",
            )
            return Lookup(None, None, (bad,))
        sha, pin = self._pin(model)
        found = (pin,) if pin is not None else ()
        if sha is None:
            return Lookup(None, None, found)
        if self.hub is None:
            return Lookup(
                sha, None, (*found, self.unavailable(model, f"needs `{pip_install('hub')}`"))
            )
        try:
            return Lookup(sha, self.hub.files(model.repo, sha), found)
        except HubError as e:
            return Lookup(sha, None, (*found, self.failed(model, e)))

    def _pin(self, model: HubModel) -> tuple[str | None, Finding | None]:
        """The commit to verify against, and PG801 when the manifest does not pin it."""
        rev = model.revision
        if rev is not None and SHA.match(rev):
            return rev, None
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
        return resolved, rules.PG801.finding(
            model.revision_at,
            f"{model.repo}: {what} (a Hub model must be pinned to a commit){why}",
            declared=f"revision: {rev}" if rev else "(no revision)",
            found=f"{rev or 'main'} is {resolved}" if resolved else "not pinned",
            hint=f"pin it: {_pin_hint(model, resolved)}"
            if resolved
            else "pin the full 40-character commit sha of the model on the Hub",
        )

    def card(self, model: HubModel) -> tuple[card.Card | None, tuple[Finding, ...]]:
        """The model's card at its pinned commit if it can be read, and the lookup's findings."""
        look = self.files(model)
        if look.files is None or self.hub is None or look.sha is None:
            return None, look.findings
        try:
            data = self.hub.read_small(model.repo, look.sha, "README.md")
        except HubError as e:
            return None, (*look.findings, self.failed(model, e))
        if data is None:
            return None, look.findings
        return card.from_bytes(
            data, f"{model.repo}@{look.sha[:12]}/README.md", self.memo
        ), look.findings

    def ancestors(self, model: HubModel) -> list[tuple[str, str]]:
        """(license, where) of the models up the card's `base_model` chain (a fine-tune of a
        fine-tune of Llama 2 is bound by Llama 2's license), breadth first, at most
        MAX_ANCESTORS models. Cards do not pin their bases, so each is read at its current
        commit; an ancestor that cannot be read ends that branch of the chain, and the direct
        base's own license is still checked."""
        out: list[tuple[str, str]] = []
        first, _ = self.card(model)
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

    def failed(self, model: HubModel, e: HubError) -> Finding:
        """The finding of a Hub failure of this model (`once_per_model` keeps the first)."""
        if e.kind in _UNAVAILABLE:
            return self.unavailable(model, f"{_UNAVAILABLE[e.kind]}: {e.message}", e.hint)
        rule = rules.PG803 if e.kind == "denied" else rules.PG804
        return rule.finding(
            model.at,
            f"{model.repo}: {e.message}; not checked",
            declared=model.declared,
            found=e.message,
            hint=e.hint,
        )

    def unavailable(self, model: HubModel, why: str, hint: str | None = None) -> Finding:
        return rules.PG802.finding(
            model.at,
            f"{model.repo}: not checked: {why}",
            declared=model.declared,
            found=f"not checked: {why}",
            hint=hint,
            severity=self.unverified,
        )


# The Hub's findings come after every other one: a model's pin (PG801) and its failure (the
# first of PG802-PG804) once per model however many checks needed it, a refused cache copy
# (PG805) each time.
_HUB_RULES: dict[str, str | None] = {
    "PG801": "pin",
    "PG802": "failed",
    "PG803": "failed",
    "PG804": "failed",
    "PG805": None,
}


def once_per_model(findings: list[Finding]) -> list[Finding]:
    """The findings with the Hub's moved to the end, a pin or failure once per model (the
    first met: lineage reads a model before the license check reads its card)."""
    seen: set[tuple[str, Location]] = set()
    rest: list[Finding] = []
    hub: list[Finding] = []
    for f in findings:
        if f.rule not in _HUB_RULES:
            rest.append(f)
            continue
        group = _HUB_RULES[f.rule]
        if group is not None and (group, f.location) in seen:
            continue
        if group is not None:
            seen.add((group, f.location))
        hub.append(f)
    return rest + hub


def _pin_hint(model: HubModel, sha: str) -> str:
    if model.key.startswith("references."):
        return f"`hf://{model.repo}@{sha}`"
    return f"`revision: {sha}`"
