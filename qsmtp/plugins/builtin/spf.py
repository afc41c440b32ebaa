"""spf -- check the sender's SPF policy (RFC 7208) with pyspf.

At MAIL FROM the client IP is checked against the SPF record of the sender
domain (for the null sender `<>`: of the HELO name, identity `helo`).  The
verdict goes into `txn.notes["spf"]` (for dmarc and your own plugins);
at `data_post` the message gets a `Received-SPF:` header and/or an
`spf=` clause in the shared `Authentication-Results:` header.  Relay
clients, authenticated senders and whitelisted hosts are not checked (their
mail is outbound).  DNS goes only to the configured nameservers (pyspf's own
lookups are routed through our resolver).

What each result does is configurable (`deny`, `denysoft`,
`deny_disconnect`, `denysoft_disconnect`, `naughty`, `note`); refusals use
RFC 7372 codes (5.7.23 fail, 5.7.24 permerror, 4.7.24 temperror).

Options:
- `fail_action` (default `deny`): SPF `fail` (`-all`).
- `softfail_action` (default `note`): SPF `softfail` (`~all`).
- `neutral_action` (default `note`): `neutral` and `none` (no record).
- `permerror_action` (default `note`): a broken SPF record.
- `temperror_action` (default `note`): DNS trouble; `denysoft` asks the
  client to retry (RFC 7208 8.6 allows either).
- `timeout` (float seconds, default 10): the whole SPF evaluation, all
  its lookups (up to 10 DNS-querying mechanisms, RFC 7208 4.6.4) included;
  past it the result is `temperror`.  Keep it below `server.hook_timeout`.
- `headers` (list, default `["received-spf", "authentication-results"]`):
  which result headers to add; `[]` for none.
- `authserv_id`: see _sender_auth.
- `nameservers`, `dns_port`, `dns_timeout`, `dns_cache`: see _dns (resolver).

Put `spf` before `dmarc` in `[[plugins]]`: dmarc reads its verdict.

qpsmtpd mapping: `sender_permitted_from reject N`: 1 -> all actions
`note`; 2 -> `temperror_action = "denysoft"`; 3 -> also
`fail_action = "deny"`, `softfail_action = "denysoft"`; 4 -> also
`softfail_action = "deny"`, `permerror_action = "denysoft"`; 5 -> also
`neutral_action = "deny"`; 6 -> also `permerror_action = "deny"`.
"""

from __future__ import annotations

import contextvars
import time
from typing import TYPE_CHECKING, Any

from qsmtp import domains
from qsmtp.plugins.api import HookReturn, Option, Params, Plugin, PluginError, transaction_of
from qsmtp.plugins.builtin import _dns
from qsmtp.plugins.builtin._sender_auth import (
    AUTHRES_OPTIONS,
    SpfVerdict,
    add_result,
    authserv_id,
    coded,
    skipped,
)
from qsmtp.plugins.builtin.naughty import ACTIONS, act

if TYPE_CHECKING:
    from qsmtp.smtp.address import Address
    from qsmtp.smtp.state import Session


HEADERS = ("received-spf", "authentication-results")
# Enhanced codes, RFC 7372: SPF validation failed / error.
_CODES = {"fail": ("5.7.23", "4.7.24"), "softfail": ("5.7.23", "4.7.24"),
          "neutral": ("5.7.23", "4.7.24"), "none": ("5.7.23", "4.7.24"),
          "permerror": ("5.7.24", "4.7.24"), "temperror": ("5.7.24", "4.7.24")}
# (resolver, deadline) of the plugin whose check is running.  pyspf calls the
# module global spf.DNSLookup; while our check runs, that goes to our resolver.
_RESOLVER: contextvars.ContextVar[Any] = contextvars.ContextVar("qsmtp_spf_resolver",
                                                                  default=None)


class Spf(Plugin):
    """Checks the sender's SPF record; headers and notes for dmarc."""

    options = {
        "fail_action": Option(str, "deny", "what SPF fail does", choices=ACTIONS),
        "softfail_action": Option(str, "note", "what softfail does", choices=ACTIONS),
        "neutral_action": Option(str, "note", "neutral / none", choices=ACTIONS),
        "permerror_action": Option(str, "note", "broken SPF record", choices=ACTIONS),
        "temperror_action": Option(str, "note", "DNS trouble", choices=ACTIONS),
        "timeout": Option(float, 10.0, "seconds for the whole SPF evaluation",
                          bounds=(0.1, 3600)),
        "headers": Option(list, list(HEADERS), "result headers to add"),
        **AUTHRES_OPTIONS,
        **_dns.DNS_OPTIONS,
    }

    def setup(self) -> None:
        try:
            import spf
        except ImportError:
            raise PluginError(self.name, "name", "needs pyspf (python3-spf)") from None
        bad = [h for h in self.opts.headers if h not in HEADERS]
        if bad:
            raise PluginError(self.name, "headers", f"{bad!r}: want some of {', '.join(HEADERS)}")
        if self.opts.timeout <= 0:
            raise PluginError(self.name, "timeout", "must be > 0")
        self.resolver = _dns.make_resolver(self)
        _install_lookup(spf)

    def check(self, ip: str, sender: str, helo: str) -> tuple[Any, str, str]:
        """pyspf query object, result, explanation."""
        import spf
        query = spf.query(i=ip, s=sender, h=helo, receiver=self.config.server.me,
                          timeout=self.opts.dns_timeout, querytime=self.opts.timeout)
        token = _RESOLVER.set((self.resolver, time.monotonic() + self.opts.timeout))
        try:
            result, _code, explanation = query.check()
        finally:
            _RESOLVER.reset(token)
        return query, result, explanation

    def hook_mail(self, session: Session, sender: Address | None, params: Params) -> HookReturn:
        txn = session.transaction
        if skipped(session) or txn is None:
            return None
        # The domain is evaluated as its IDNA 2008 A-label (qsmtp.domains).
        ascii_domain = sender.ascii_domain if sender is not None and sender.domain else None
        address = f"{sender.local}@{ascii_domain}" if sender is not None and ascii_domain else ""
        helo = session.helo_host or ""
        query, result, explanation = self.check(session.conn.peer_ip, address, helo)
        domain = ascii_domain if ascii_domain and address else domains.comparable(helo)
        verdict = SpfVerdict(result, domain, query.ident, explanation,
                             _received_spf(query, result))
        txn.notes["spf"] = verdict
        self.log.info("session %s: spf=%s %s=%s (%s)", session.id, result, query.ident,
                      domain, explanation)
        action = getattr(self.opts, f"{result}_action", None)
        if result == "none":
            action = self.opts.neutral_action
        if action is None or result == "pass":
            return None
        perm, temp = _CODES[result]
        text = f"SPF {result} for {domain}: {explanation}"
        return act(session, self, action, coded(action, perm, temp, text))

    def hook_data_post(self, session: Session) -> HookReturn:
        txn = session.transaction
        verdict = txn.notes.get("spf") if txn is not None else None
        if verdict is None:
            return None
        if "received-spf" in self.opts.headers and verdict.received_spf:
            transaction_of(session).prepend_header("Received-SPF", verdict.received_spf)
        if "authentication-results" in self.opts.headers:
            import authres
            kwargs = ({"smtp_helo": verdict.domain} if verdict.identity == "helo"
                      else {"smtp_mailfrom": verdict.domain})
            add_result(transaction_of(session), authserv_id(self),
                       authres.SPFAuthenticationResult(result=verdict.result, **kwargs))
        return None


def _received_spf(query: Any, result: str) -> str:
    try:
        return query.get_header(result)
    except Exception:  # noqa: BLE001 - pyspf builds it from query state; never fatal
        return ""


# -- routing pyspf's DNS through our resolver -----------------------------------
def _install_lookup(spf_module: Any) -> None:
    if getattr(spf_module.DNSLookup, "qsmtp", False):
        return
    original = spf_module.DNSLookup

    def lookup(name: str, qtype: str, strict: bool = True, timeout: float = 30) -> list[Any]:
        current = _RESOLVER.get()
        if current is None:  # someone else's pyspf use in this process
            return original(name, qtype, strict, timeout)
        resolver, deadline = current
        left = deadline - time.monotonic()
        if left <= 0:
            raise spf_module.TempError("DNS: SPF evaluation ran out of time")
        return _lookup(spf_module, resolver, name, qtype, left)

    lookup.qsmtp = True  # type: ignore[attr-defined]
    spf_module.DNSLookup = lookup


def _lookup(spf_module: Any, resolver: Any, name: str, qtype: str,
            left: float) -> list[Any]:
    """pyspf's DNSLookup contract: [((name, type), value)], [] for no data,
    spf.TempError when DNS can't answer now."""
    import dns.exception
    import dns.rdatatype
    import dns.resolver
    try:  # A-labels under IDNA 2008, not dnspython's IDNA 2003 for Unicode names
        name = domains.lookup_name(name)
    except domains.DomainError:
        return []
    try:
        answer = resolver.resolve(name, qtype, search=False, raise_on_no_answer=False,
                                  lifetime=min(resolver.lifetime, left))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise spf_module.TempError(f"DNS {type(exc).__name__}: {exc}") from None
    out = []
    for rrset in answer.response.answer:  # CNAMEs too: pyspf follows them
        owner = rrset.name.to_text(omit_final_dot=True)
        kind = dns.rdatatype.to_text(rrset.rdtype)
        for rdata in rrset:
            out.append(((owner, kind), _value(kind, rdata)))
    return out


def _value(kind: str, rdata: Any) -> Any:
    if kind in ("A", "AAAA"):
        return rdata.address
    if kind == "MX":
        return (rdata.preference, rdata.exchange)
    if kind in ("PTR", "CNAME"):
        return rdata.target.to_text(True)
    if kind in ("TXT", "SPF"):
        return rdata.strings
    return rdata.to_text()
