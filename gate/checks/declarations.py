"""Licenses and the model card: the manifest, the card, the LICENSE file and the base models must
agree, and the license policy must hold. Every finding is located at the manifest line; card
disagreements also name the card line. A base's license comes from the manifest, a local base
folder's card, or a Hub base's card at its pinned commit (which wins when they disagree)."""

from __future__ import annotations

import json
import os
import re

from gate import card, hubmodels, licenses, paths, rules
from gate.evidence import Evidence
from gate.findings import Finding, Location
from gate.hubmodels import HubBases
from gate.licenses import License
from gate.manifest import BaseModel, Manifest, Memo

LICENSE_FILES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "LICENCE.md", "COPYING")
MAX_LICENSE_BYTES = 1 << 20
_URL = re.compile(r"^https?://[^\s/]+\.[^\s]+$")
# model card `base_model_relation` values (the Hub's); the manifest adds `copy` and `pruned`
CARD_RELATIONS = frozenset({"adapter", "merge", "quantized", "finetune", "distill"})


def check(ev: Evidence) -> list[Finding]:
    """The registered check: license and card findings of the evidence's manifest."""
    return check_manifest(ev.target.root, ev.manifest, ev.scanner.cache, ev.hubs)


def check_manifest(
    root: str, manifest: Manifest, memo: Memo | None = None, hubs: HubBases | None = None
) -> list[Finding]:
    """License and card findings for one manifest (memo: the parse cache for card YAML; hubs:
    the Hub base models' cards, when the Hub or its cache can be read)."""
    c = _Checker(root, manifest, memo, hubs)
    c.model_license()
    c.card_agreement()
    c.license_file()
    c.bases()
    c.policy()
    return c.out


class _Checker:
    def __init__(
        self, root: str, manifest: Manifest, memo: Memo | None, hubs: HubBases | None
    ) -> None:
        self.root, self.m, self.memo, self.hubs = root, manifest, memo, hubs
        self.out: list[Finding] = []
        self.lic = licenses.parse(manifest.license)
        self.card = card.read(root, manifest.card, memo)
        self.base_licenses: list[tuple[int, BaseModel, License | None, str]] = []

    def at(self, *path: str | int) -> Location:
        return self.m.locate(*path)

    # ------------------------------------------------------------------ the model's own
    def model_license(self) -> None:
        m, lic = self.m, self.lic
        if lic.tree is None:
            self.out.append(self.invalid(lic, ("model", "license")))
            return
        if lic.is_("unknown"):
            self.out.append(
                rules.PG402.finding(
                    self.at("model", "license"),
                    "license `unknown`: nobody can tell what users of this model may do",
                    declared=m.license,
                    found="terms unknown",
                )
            )
        if "other" in lic.ids:
            self.other()
        if m.commercial_use and licenses.commercial(lic) == "no":
            self.out.append(
                rules.PG406.finding(
                    self.at("model", "commercial_use"),
                    f"commercial use is claimed, but the model's own license `{lic.normalized}`"
                    " does not allow it",
                    declared="commercial_use: true",
                    found=f"{lic.normalized}: {licenses.strictest(lic)['obligation']}",
                    hint="set `commercial_use: false`, or release under a license allowing it",
                )
            )

    def invalid(self, lic: License, path: tuple[str | int, ...]) -> Finding:
        return rules.PG401.finding(
            self.at(*path),
            f"license `{lic.text}` is neither a Hugging Face Hub license id nor a valid SPDX"
            f" expression: {lic.error}",
            declared=lic.text,
            found=lic.error,
        )

    def other(self) -> None:
        m = self.m
        if not m.license_name:
            self.out.append(
                rules.PG403.finding(
                    self.at("model", "license"),
                    "license `other` needs `license_name`",
                    declared="license: other",
                    found="no license_name",
                    hint="add `license_name:` (a short id of the custom license)",
                )
            )
        link = m.license_link
        if not link:
            self.out.append(
                rules.PG403.finding(
                    self.at("model", "license"),
                    "license `other` needs `license_link` (a file in the repository or a URL)",
                    declared="license: other",
                    found="no license_link",
                    hint="add `license_link: LICENSE` and commit the license text",
                )
            )
        elif not _URL.match(link):
            real, escape = paths.resolve_inside(self.root, link)
            if escape is not None or not os.path.isfile(real):
                why = escape or "no such file in the repository"
                self.out.append(
                    rules.PG403.finding(
                        self.at("model", "license_link"),
                        f"license_link `{link}` does not resolve: {why}",
                        declared=link,
                        found=why,
                        hint="point license_link at the committed license text, or at an https URL",
                    )
                )

    # ------------------------------------------------------------------ the card
    def card_agreement(self) -> None:
        m, c = self.m, self.card
        _, escape = paths.resolve_inside(self.root, m.card)
        if c is None and escape is not None and os.path.lexists(os.path.join(self.root, m.card)):
            self.out.append(
                rules.PG202.finding(
                    self.at("model", "card"),
                    f"model card {m.card}: {escape}; not read",
                    declared=m.card,
                    found=escape,
                    hint="commit the model card itself in the repository, not a link to it",
                )
            )
            return
        if c is None:
            self.out.append(
                rules.PG601.finding(
                    self.at("model", "card"),
                    f"model card {m.card} not found, or without readable YAML front matter:"
                    " license and base models were not cross-checked with it",
                    declared=m.card,
                    found="no front matter",
                )
            )
            return
        card_lic = c.data.get("license")
        if not isinstance(card_lic, str) or not card_lic.strip():
            self.mismatch("license", m.license, "no `license`", c.line())
        elif licenses.parse(card_lic).normalized.lower() != self.lic.normalized.lower():
            self.mismatch("license", m.license, card_lic, c.line("license"))
        for key, value in (("license_name", m.license_name), ("license_link", m.license_link)):
            theirs = c.data.get(key)
            if value is not None and theirs is not None and str(theirs) != value:
                self.mismatch(key, value, str(theirs), c.line(key))
            elif (value is None) != (theirs is None) and "other" in self.lic.ids:
                self.mismatch(key, value or "(none)", str(theirs or "(none)"), c.line(key))
        self.card_bases(c)

    def mismatch(self, key: str, ours: str, theirs: str, card_line: int) -> None:
        self.out.append(
            rules.PG404.finding(
                self.at("model", key),
                f"`{key}` is `{ours}` here but `{theirs}` in {self.m.card}:{card_line}",
                declared=ours,
                found=f"{theirs} ({self.m.card}:{card_line})",
                hint=f"make {self.m.card} and the manifest declare the same {key}",
            )
        )

    def card_bases(self, c: card.Card) -> None:
        m = self.m
        raw = c.data.get("base_model")
        theirs, malformed = card.strings(raw)
        if malformed:
            self.out.append(
                rules.PG602.finding(
                    self.at("base_models") if m.base_models else self.at("model", "origin"),
                    f"{m.card}:{c.line('base_model')}: `base_model` must be a Hub id or a list of"
                    f" them; it holds {json.dumps(raw, default=str)[:200]}",
                    declared=", ".join(b.name for b in m.base_models) or f"origin: {m.origin}",
                    found=f"base_model: {json.dumps(raw, default=str)[:200]}",
                    hint="write the base models' Hub ids as strings in the card",
                )
            )
        hub_ids = {b.id.lower(): i for i, b in enumerate(m.base_models) if b.id}
        card_ids = {t.lower() for t in theirs}
        missing = sorted(set(hub_ids) - card_ids)
        extra = sorted(card_ids - set(hub_ids))
        if missing or extra or (m.origin == "scratch" and theirs):
            where = c.line("base_model") if raw is not None else c.line()
            what = "; ".join(
                ([f"not in the card: {', '.join(missing)}"] if missing else [])
                + ([f"only in the card: {', '.join(extra)}"] if extra else [])
            )
            path: tuple[str | int, ...] = (
                ("base_models", hub_ids[missing[0]]) if missing else ("model", "origin")
            )
            self.out.append(
                rules.PG602.finding(
                    self.at(*path),
                    f"base models disagree with {m.card}:{where}: {what}",
                    declared=", ".join(b.name for b in m.base_models) or f"origin: {m.origin}",
                    found=f"base_model: {', '.join(theirs) or '(none)'} ({m.card}:{where})",
                    hint="list the same Hub base models in the card's `base_model` and the"
                    " manifest",
                )
            )
        relation = c.data.get("base_model_relation")
        if not isinstance(relation, str) or not m.base_models:
            return
        ours = {b.relation for b in m.base_models}
        if relation not in ours:
            i = 0
            self.out.append(
                rules.PG603.finding(
                    self.at("base_models", i, "relation"),
                    f"the card says `base_model_relation: {relation}`"
                    f" ({m.card}:{c.line('base_model_relation')}), the manifest"
                    f" `{', '.join(sorted(ours))}`",
                    declared=", ".join(sorted(ours)),
                    found=f"{relation} ({m.card}:{c.line('base_model_relation')})",
                )
            )

    # ------------------------------------------------------------------ LICENSE file
    def license_file(self) -> None:
        if self.lic.tree is None:
            return
        for name in LICENSE_FILES:
            real, escape = paths.resolve_inside(self.root, name)
            if escape is not None and os.path.lexists(os.path.join(self.root, name)):
                self.out.append(
                    rules.PG202.finding(
                        self.at("model", "license"),
                        f"{name}: {escape}; not read",
                        declared=name,
                        found=escape,
                        hint="commit the license text itself in the repository, not a link to it",
                    )
                )
                continue
            if escape is not None or not os.path.isfile(real):
                continue
            try:
                with paths.open_regular(real) as f:
                    text = paths.read_capped(f, MAX_LICENSE_BYTES).decode("utf-8", "replace")
            except OSError:
                continue
            found = licenses.identify_text(text)
            ids = {i.lower() for i in self.lic.ids}
            if found is None and not ids <= {"other"}:  # custom terms are `other`'s to link
                # a warning when the declared licenses' texts are known (this is none of them),
                # a note when some are not in the table (it may be that text)
                known = all(i in licenses.data()["texts"] for i in ids)
                self.out.append(
                    rules.PG411.finding(
                        self.at("model", "license"),
                        f"{name} is not recognised as the text of any known license, so it does not"
                        f" confirm the declared license `{self.lic.normalized}`"
                        + ("" if known else " (whose text is not in the gate's table)"),
                        declared=self.lic.normalized,
                        found=f"{name}: unrecognised text ({_opening(text)})",
                        hint=f"commit the full, unmodified text of `{self.lic.normalized}` as"
                        f" {name};"
                        " for custom terms declare `license: other` with license_name and"
                        " license_link",
                        severity=None if known else "note",
                    )
                )
                return
            if found is None or found in ids or self._same(found, ids):
                return
            self.out.append(
                rules.PG405.finding(
                    self.at("model", "license"),
                    f"{name} is the {licenses.data()['hub_ids'].get(found, {}).get('name', found)}"
                    f" text, but the declared license is `{self.lic.normalized}`",
                    declared=self.lic.normalized,
                    found=f"{name}: {found}",
                    hint=f"declare `license: {found}`, or replace {name} with the declared license",
                )
            )
            return

    @staticmethod
    def _same(found: str, ids: set[str]) -> bool:
        """SPDX and Hub spell some ids differently (GPL-3.0-only vs gpl-3.0)."""
        return any(i.startswith(found) or found.startswith(i) for i in ids)

    # ------------------------------------------------------------------ bases
    def bases(self) -> None:
        for i, base in enumerate(self.m.base_models):
            lic, source = self.base_license(i, base)
            self.base_licenses.append((i, base, lic, source))
            if lic is None or lic.tree is None or self.lic.tree is None:
                continue
            self.inherit(i, base, lic, source)
            if base.id and self.hubs is not None:  # the base's own bases bind this model too
                for value, where in self.hubs.ancestors(hubmodels.of_base(self.m, i, base)):
                    ancestor = licenses.parse(value)
                    if ancestor.tree is not None:
                        self.inherit(i, base, ancestor, where)

    def base_license(self, i: int, base: BaseModel) -> tuple[License | None, str]:
        declared = None
        if base.license:
            declared = licenses.parse(base.license)
            if declared.tree is None:
                self.out.append(self.invalid(declared, ("base_models", i, "license")))
            if base.path or self.hubs is None:
                return declared, "declared"
        if base.path:
            c = card.read(self.root, os.path.join(base.path, "README.md"), self.memo)
            value = c.data.get("license") if c is not None else None
            if isinstance(value, str):
                return licenses.parse(value), f"{base.path}/README.md"
        elif self.hubs is not None:
            c, hub_findings = self.hubs.card(hubmodels.of_base(self.m, i, base))
            self.out.extend(hub_findings)
            value = c.data.get("license") if c is not None else None
            if c is not None and isinstance(value, str):
                found = licenses.parse(value)
                if declared is None:
                    return found, c.path
                if found.tree is not None and found.normalized != declared.normalized:
                    self.out.append(
                        rules.PG404.finding(
                            self.at("base_models", i, "license"),
                            f"{base.name}: base license declared `{declared.normalized}`,"
                            f" but the base's card on the Hub says `{found.normalized}`",
                            declared=f"license: {declared.normalized}",
                            found=f"{c.path}:{c.line('license')}: license: {found.normalized}",
                            hint=f"declare `license: {found.normalized}` for this base",
                        )
                    )
                    return found, c.path  # the base's own card is the better authority
        if declared is not None:
            return declared, "declared"
        why = "no `license` declared" + (
            " and no license in its folder's README.md"
            if base.path
            else " and its card on the Hub could not be read or has no license"
        )
        self.out.append(
            rules.PG409.finding(
                self.at("base_models", i),
                f"{base.name}: base license not checked: {why}",
                declared=base.name,
                found="license unknown",
                hint="declare the base model's license in `base_models[].license`",
            )
        )
        return None, ""

    def inherit(self, i: int, base: BaseModel, lic: License, source: str) -> None:
        m = self.m
        unknown = licenses.unknown_terms(lic)
        if unknown and len(unknown) == len(lic.ids):
            self.out.append(
                rules.PG409.finding(
                    self.at("base_models", i),
                    f"{base.name}: the terms of base license `{lic.normalized}` are not in the"
                    " inheritance table, so what it requires of derivatives was not checked",
                    declared=lic.normalized,
                    found="terms not evaluated",
                )
            )
            return
        origin = "" if source == "declared" else f" (from {source})"
        if not licenses.satisfied(lic, self.lic):
            row = licenses.strictest(lic)
            self.out.append(
                rules.PG406.finding(
                    self.at("model", "license"),
                    f"{base.name} is licensed `{lic.normalized}`{origin}, which requires: "
                    f"{row['obligation']}; this model declares `{self.lic.normalized}`",
                    declared=f"license: {self.lic.normalized}",
                    found=f"base {base.name}: {lic.normalized}",
                    details=(f"term: {row['source']}",),
                    hint=f"a consistent declaration: {licenses.consistent_declaration(lic)}",
                )
            )
        if m.commercial_use and licenses.commercial(lic) == "no":
            self.out.append(
                rules.PG406.finding(
                    self.at("model", "commercial_use"),
                    f"commercial use is claimed, but base {base.name} is licensed"
                    f" `{lic.normalized}`{origin}, which forbids it",
                    declared="commercial_use: true",
                    found=f"base {base.name}: {lic.normalized}",
                    details=(f"term: {licenses.strictest(lic)['source']}",),
                    hint="set `commercial_use: false`",
                )
            )
        for license_id in lic.ids:
            prefix = licenses.terms(license_id).get("name_prefix")
            short = m.name.rsplit("/", 1)[-1]
            if prefix and not short.lower().startswith(prefix.lower()):
                self.out.append(
                    rules.PG410.finding(
                        self.at("model", "name"),
                        f"base {base.name} is licensed `{license_id}`, whose terms ask a derived"
                        f" model's name to begin with “{prefix}”; this one is `{m.name}`",
                        declared=m.name,
                        found=f"base license {license_id}",
                        details=(f"term: {licenses.terms(license_id)['source']}",),
                        hint=f"rename to “{prefix}-…” (and credit the base as its license asks)",
                    )
                )

    # ------------------------------------------------------------------ policy
    def policy(self) -> None:
        p, m = self.m.policy, self.m
        allow, deny = p.license_allow, p.license_deny
        if allow is not None and not allow:
            self.out.append(
                rules.PG408.finding(
                    self.at("policy", "licenses", "allow"),
                    "policy.licenses.allow is empty: no license could ever pass",
                    declared="allow: []",
                    found="empty",
                    hint="list the licenses you accept, or remove `allow`",
                )
            )
            return
        both = sorted({x.lower() for x in allow or ()} & {x.lower() for x in deny})
        if both:
            self.out.append(
                rules.PG408.finding(
                    self.at("policy", "licenses"),
                    f"policy allows and denies the same license(s): {', '.join(both)}",
                    declared="allow and deny",
                    found=", ".join(both),
                    hint="keep each license in one list",
                )
            )
            return
        if (
            p.commercial_use_required
            and allow is not None
            and all(licenses.commercial(licenses.parse(a)) == "no" for a in allow)
        ):
            self.out.append(
                rules.PG408.finding(
                    self.at("policy", "commercial_use_required"),
                    "policy requires commercial use but allows only non-commercial licenses",
                    declared="commercial_use_required",
                    found=", ".join(allow),
                    hint="allow a license that permits commercial use",
                )
            )
            return
        targets: list[tuple[str, License, tuple[str | int, ...]]] = []
        if self.lic.tree is not None:
            targets.append(("this model", self.lic, ("model", "license")))
        for i, base, lic, _ in self.base_licenses:
            if lic is not None and lic.tree is not None:
                targets.append((f"base {base.name}", lic, ("base_models", i)))
        for who, lic, path in targets:
            if deny and licenses.denied(lic, deny):
                self.policy_finding(
                    f"{who}: license `{lic.normalized}` is denied by the policy", path, lic, "deny"
                )
            elif allow is not None and not licenses.in_list(lic, allow):
                self.policy_finding(
                    f"{who}: license `{lic.normalized}` is not in the allow list",
                    path,
                    lic,
                    "allow",
                )
            if p.commercial_use_required and licenses.commercial(lic) in ("no", "unknown"):
                state = licenses.commercial(lic)
                why = (
                    "forbids commercial use"
                    if state == "no"
                    else ("cannot be shown to allow commercial use")
                )
                message = f"{who}: license `{lic.normalized}` {why}, and the policy requires it"
                self.policy_finding(message, path, lic, "commercial")
        if p.commercial_use_required and m.commercial_use is False:
            self.policy_finding(
                "the policy requires commercial use, but the model declares"
                " `commercial_use: false`",
                ("model", "commercial_use"),
                self.lic,
                "commercial",
            )
        for i, base, lic, _ in self.base_licenses:
            if lic is None and (p.commercial_use_required or allow is not None or deny):
                self.policy_finding(
                    f"base {base.name}: license unknown, so the license policy"
                    " cannot be shown to hold (fail closed)",
                    ("base_models", i),
                    None,
                    "unknown",
                )

    def policy_finding(
        self, message: str, path: tuple[str | int, ...], lic: License | None, what: str
    ) -> None:
        self.out.append(
            rules.PG407.finding(
                self.at(*path),
                message,
                declared=lic.normalized if lic is not None else "(none)",
                found=what,
            )
        )


def _opening(text: str, width: int = 60) -> str:
    """The first words of a text, on one line, for a finding."""
    words = " ".join(text.split())
    return repr(words[:width] + ("..." if len(words) > width else ""))
