"""dmarc -- apply the From: domain's DMARC policy (RFC 7489).

At `data_post`, after `spf` and `dkim` (list them before `dmarc` in
`[[plugins]]`; checked at load):
1. the RFC 5322 From: domain is taken from the one From: address (none,
   or several: `dmarc=permerror`, see `bad_from_action`);
2. the policy is looked up at `_dmarc.<from domain>`, else at
   `_dmarc.<organisational domain>` (Public Suffix List; `sp=` then
   applies); no record: `dmarc=none`, nothing else happens;
3. the message passes when an SPF pass (MAIL FROM domain, or HELO for `<>`)
   or a DKIM pass (`d=`) is aligned with the From: domain: relaxed = same
   organisational domain, strict (`aspf=s` / `adkim=s`) = same name;
4. a failing message gets the policy's disposition: `p=reject` ->
   `reject_action`, `p=quarantine` -> `quarantine_action`, `p=none` ->
   nothing.  `pct=` is honoured (a message outside the sample gets the next
   milder disposition, RFC 7489 6.6.4) unless `honor_pct = false`.

The result is in `txn.notes["dmarc"]` (`DmarcVerdict`) and the shared
`Authentication-Results:` header, built with authres:
`dmarc=fail (p=reject dis=reject) header.from=example.test policy.dmarc=reject`.
A quarantined message is accepted; downstream filters (Sieve) can file it
by the `dis=quarantine` in that header.  Relay clients, authenticated
senders and whitelisted hosts are not checked.  No reports are sent.

Options:
- `reject_action` (default `deny`): disposition reject; one of `deny`,
  `denysoft`, `deny_disconnect`, `denysoft_disconnect`, `naughty`, `note`.
- `quarantine_action` (default `note`): disposition quarantine.
- `temperror_action` (default `note`): the policy lookup failed (DNS).
- `bad_from_action` (default `note`): no From:, several From: fields or
  addresses (RFC 7489 6.6.1 allows rejecting them).
- `honor_pct` (bool, default true): apply `pct=` sampling.
- `psl_file` (default `/usr/share/publicsuffix/public_suffix_list.dat`,
  Debian's `publicsuffix` package): the Public Suffix List.
- `authserv_id`: see _sender_auth.
- `nameservers`, `dns_port`, `dns_timeout`, `dns_cache`: see _dns (resolver).

qpsmtpd mapping: `dmarc reject 1` -> `reject_action = "deny"`; `reject 0`
-> `reject_action = "note"`; `reject_type temp` -> `reject_action =
"denysoft"`; config/public_suffix_list -> `psl_file`.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from qsmtp.plugins.api import HookReturn, Option, Plugin, PluginError, body_of
from qsmtp.plugins.builtin import _dns
from qsmtp.plugins.builtin._sender_auth import (
    AUTHRES_OPTIONS,
    PSL_PATH,
    DmarcVerdict,
    PublicSuffixList,
    add_result,
    authserv_id,
    coded,
    from_domain_of,
    parse_headers,
    skipped,
)
from qsmtp.plugins.builtin.naughty import ACTIONS, act

if TYPE_CHECKING:
    from qsmtp.smtp.state import Session, Transaction


POLICIES = ("none", "quarantine", "reject")
MILDER = {"reject": "quarantine", "quarantine": "none", "none": "none"}


class Policy:
    """A parsed DMARC record (only the tags that decide disposition)."""

    def __init__(self, tags: dict[str, str], domain: str, at_org: bool):
        self.domain, self.at_org = domain, at_org
        p = tags.get("p", "").lower()
        if p not in POLICIES:
            p = "none"  # RFC 7489 6.6.3 6.A: invalid p with rua= acts as none
        sp = tags.get("sp", "").lower()
        self.p = p
        self.sp = sp if sp in POLICIES else p
        self.adkim_strict = tags.get("adkim", "r").lower() == "s"
        self.aspf_strict = tags.get("aspf", "r").lower() == "s"
        try:
            self.pct = min(max(int(tags.get("pct", "100")), 0), 100)
        except ValueError:
            self.pct = 100

    @property
    def applied(self) -> str:
        """p= for the domain itself, sp= for a subdomain of the record's."""
        return self.sp if self.at_org else self.p

    @classmethod
    def parse(cls, text: str, domain: str, at_org: bool) -> Policy | None:
        tags: dict[str, str] = {}
        for part in text.split(";"):
            key, sep, value = part.partition("=")
            if sep:
                tags.setdefault(key.strip().lower(), value.strip())
        p_valid = tags.get("p", "").lower() in POLICIES
        if not p_valid and "rua" not in tags:
            return None  # 6.6.3 6.B: no usable policy
        return cls(tags, domain, at_org)


class _NoPolicy(Exception):
    pass


class Dmarc(Plugin):
    """Applies the From: domain's DMARC policy using the spf and dkim verdicts."""

    options = {
        "reject_action": Option(str, "deny", "disposition reject", choices=ACTIONS),
        "quarantine_action": Option(str, "note", "disposition quarantine", choices=ACTIONS),
        "temperror_action": Option(str, "note", "policy lookup failed", choices=ACTIONS),
        "bad_from_action": Option(str, "note", "missing or multiple From:", choices=ACTIONS),
        "honor_pct": Option(bool, True, "apply pct= sampling"),
        "psl_file": Option(str, PSL_PATH, "Public Suffix List file"),
        **AUTHRES_OPTIONS,
        **_dns.DNS_OPTIONS,
    }

    def setup(self) -> None:
        try:
            import authres.dmarc  # noqa: F401
        except ImportError:
            raise PluginError(self.name, "name", "needs authres (python3-authres)") from None
        self.psl = PublicSuffixList.load(self.name, self.opts.psl_file)
        self.resolver = _dns.make_resolver(self)
        self._check_order()

    def _check_order(self) -> None:
        """spf and dkim leave their verdicts for us: they must run first."""
        names = [entry.get("name") for entry in getattr(self.config, "plugins", [])]
        if self.name not in names:
            return  # built outside a config file (tests, tools)
        here = names.index(self.name)
        late = [n for n in ("spf", "dkim") if n in names[here:]]
        if late:
            raise PluginError(self.name, "name", f"list {' and '.join(late)} before "
                              f"{self.name} in [[plugins]] (it reads their results)")
        if not {"spf", "dkim"} & set(names[:here]):
            self.log.warning("dmarc without spf or dkim before it: nothing can align")

    def hook_data_post(self, session: Session) -> HookReturn:
        txn = session.transaction
        if txn is None or txn.body is None or skipped(session):
            return None
        verdict, action = self.evaluate(session, txn)
        txn.notes["dmarc"] = verdict
        self.record(txn, verdict)
        self.log.info("session %s: dmarc=%s from=%s policy=%s dis=%s %s", session.id,
                      verdict.result, verdict.from_domain or "-", verdict.policy,
                      verdict.disposition, "; ".join(verdict.reasons))
        if action is None:
            return None
        text = {
            "temperror": f"DMARC policy of {verdict.from_domain} could not be fetched",
            "permerror": "DMARC needs exactly one From: address",
        }.get(verdict.result, f"DMARC policy of {verdict.from_domain} refuses this message:"
                              " not authenticated by SPF or DKIM")
        perm = "5.7.26" if verdict.result == "fail" else "5.7.1"
        return act(session, self, action, coded(action, perm, "4.7.1", text))

    def evaluate(self, session: Session, txn: Transaction) -> tuple[DmarcVerdict, str | None]:
        from_domain = from_domain_of(parse_headers(body_of(txn)))
        if not from_domain:
            verdict = DmarcVerdict("permerror", "", reasons=["no single From: address"])
            return verdict, self.opts.bad_from_action
        try:
            policy = self.lookup(from_domain)
        except _dns.DnsTempError as exc:
            verdict = DmarcVerdict("temperror", from_domain, reasons=[str(exc)])
            return verdict, self.opts.temperror_action
        except _NoPolicy:
            return DmarcVerdict("none", from_domain), None
        verdict = DmarcVerdict("fail", from_domain, policy=policy.applied)
        verdict.reasons = self.aligned(txn, from_domain, policy)
        if verdict.reasons:
            verdict.result = "pass"
            return verdict, None
        disposition = policy.applied
        if self.opts.honor_pct and random.randrange(100) >= policy.pct:
            disposition = MILDER[disposition]
        verdict.disposition = disposition
        action = {"reject": self.opts.reject_action,
                  "quarantine": self.opts.quarantine_action}.get(disposition)
        return verdict, action

    def lookup(self, from_domain: str) -> Policy:
        """The policy for `from_domain`. Raises _NoPolicy or DnsTempError."""
        org = self.psl.org_domain(from_domain)
        for domain in dict.fromkeys((from_domain, org)):
            records = [r for r in _dns.query(self.resolver, f"_dmarc.{domain}", "TXT")
                       if r.startswith("v=DMARC1") and
                       r[len("v=DMARC1"):].lstrip()[:1] in (";", "")]
            if len(records) > 1:
                raise _NoPolicy()  # 6.6.3 step 5: several records, no policy
            if records:
                policy = Policy.parse(records[0], domain, domain != from_domain)
                if policy is None:
                    raise _NoPolicy()
                return policy
        raise _NoPolicy()

    def aligned(self, txn: Transaction, from_domain: str, policy: Policy) -> list[str]:
        """The authenticated identifiers aligned with From: (empty: fail)."""
        found = []
        spf = txn.notes.get("spf")
        if spf is not None and spf.result == "pass" and \
                self.psl.aligned(spf.domain, from_domain, policy.aspf_strict):
            found.append(f"spf {spf.identity}={spf.domain}")
        for dkim in txn.notes.get("dkim") or []:
            if dkim.result == "pass" and \
                    self.psl.aligned(dkim.domain, from_domain, policy.adkim_strict):
                found.append(f"dkim d={dkim.domain}")
        return found

    def record(self, txn: Transaction, verdict: DmarcVerdict) -> None:
        import authres.dmarc
        comment = None
        if verdict.result in ("pass", "fail"):
            comment = f"p={verdict.policy} dis={verdict.disposition}"
        clause = authres.dmarc.DMARCAuthenticationResult(
            result=verdict.result, result_comment=comment,
            header_from=verdict.from_domain or None,
            policy=verdict.policy if verdict.result in ("pass", "fail") else None)
        add_result(txn, authserv_id(self), clause)
