"""dkim -- verify DKIM signatures (RFC 6376) and sign our users' mail, with dkimpy.

At `data_post`:
- mail from authenticated senders (`session.auth_user`; with
  `sign_relay_clients`, relay clients too) is **signed** with the `sign`
  entry whose domain is the From: domain or a parent of it (the longest
  match wins); no matching entry, no signature.  The `DKIM-Signature:`
  header is added on top of the message.
- all other mail is **verified**: every `DKIM-Signature:` (up to
  `max_signatures`) is checked, public keys fetched from the configured
  nameservers.  Results go into `txn.notes["dkim"]` (a list of
  `DkimVerdict`, read by dmarc) and the shared `Authentication-Results:`
  header (`dkim=pass header.d=... header.s=... header.b=...`, or
  `dkim=none`).  A failed signature alone does not refuse mail by default
  (RFC 6376 6.3: treat it as unsigned); DMARC decides on policy.

Options:
- `sign` (list of tables, default `[]`): `{domain = "example.test",
  selector = "s1", key = "/etc/qsmtp/dkim/example.test.pem"}`; the key is
  an RSA private key in PEM, read and checked at load.
- `sign_headers` (list): header fields to sign when present (From always).
- `canonicalization` (default `relaxed/relaxed`): `c=` of our signatures.
- `sign_relay_clients` (bool, default false): sign for relay clients too.
- `verify` (bool, default true): verify incoming signatures.
- `max_signatures` (int, default 5): signatures checked per message.
- `fail_action` (default `note`): when no signature passes and one fails
  (`deny`, `denysoft`, `naughty`, `note`, ...).
- `temperror_action` (default `note`): a key could not be fetched.
- `authserv_id`: see _sender_auth.
- `nameservers`, `dns_port`, `dns_timeout`, `dns_cache`: see _dns (resolver).

Put `dkim` before `dmarc` in `[[plugins]]`: dmarc reads its verdicts.

qpsmtpd mapping: `dkim reject 1` -> `fail_action = "deny"`; `reject 0` ->
`fail_action = "note"`; `reject_type temp` -> `fail_action = "denysoft"`.
Signing (qpsmtpd had none built in; config/dkim/<domain>/selector,private)
-> `sign = [{domain, selector, key}]`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qsmtp import domains
from qsmtp.plugins.api import HookReturn, Option, Plugin, PluginError, body_of
from qsmtp.plugins.builtin import _dns
from qsmtp.plugins.builtin._sender_auth import (
    AUTHRES_OPTIONS,
    DkimVerdict,
    add_result,
    authserv_id,
    coded,
    from_domain_of,
    parse_headers,
    skipped,
)
from qsmtp.plugins.builtin.naughty import ACTIONS, act

if TYPE_CHECKING:
    from qsmtp.smtp.message import MessageBody
    from qsmtp.smtp.state import Session, Transaction


SIGN_HEADERS = ["from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
                "mime-version", "content-type", "content-transfer-encoding",
                "in-reply-to", "references", "list-id", "list-unsubscribe"]
CANONICALIZATIONS = ("relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple")


class _KeyTempError(Exception):
    """A public key lookup could not be answered right now."""


class Dkim(Plugin):
    """Verifies DKIM signatures; signs mail from authenticated senders."""

    options = {
        "sign": Option(list, [], "signing keys: {domain, selector, key}"),
        "sign_headers": Option(list, SIGN_HEADERS, "header fields signed when present"),
        "canonicalization": Option(str, "relaxed/relaxed", "c= of our signatures",
                                   choices=CANONICALIZATIONS),
        "sign_relay_clients": Option(bool, False, "sign for relay clients too"),
        "verify": Option(bool, True, "verify incoming signatures"),
        "max_signatures": Option(int, 5, "signatures checked per message",
                                 bounds=(1, 100)),
        "fail_action": Option(str, "note", "no signature passes, one fails", choices=ACTIONS),
        "temperror_action": Option(str, "note", "key lookup failed", choices=ACTIONS),
        **AUTHRES_OPTIONS,
        **_dns.DNS_OPTIONS,
    }

    def setup(self) -> None:
        try:
            import dkim  # noqa: F401
        except ImportError:
            raise PluginError(self.name, "name", "needs dkimpy (python3-dkim)") from None
        if self.opts.max_signatures < 1:
            raise PluginError(self.name, "max_signatures", "must be >= 1")
        if "from" not in [h.lower() for h in self.opts.sign_headers]:
            raise PluginError(self.name, "sign_headers", "must include from (RFC 6376 5.4)")
        self.keys = [self._signing_key(entry) for entry in self.opts.sign]
        self.keys.sort(key=lambda k: -len(k["domain"]))  # most specific first
        self.resolver = _dns.make_resolver(self)

    def _signing_key(self, entry: Any) -> dict[str, Any]:
        from dkim.crypto import UnparsableKeyError, parse_pem_private_key
        if not isinstance(entry, dict) or set(entry) != {"domain", "selector", "key"} or \
                not all(isinstance(v, str) and v for v in entry.values()):
            raise PluginError(self.name, "sign", f"{entry!r}: want {{domain = ..., "
                              "selector = ..., key = \"/path/key.pem\"}")
        try:
            with open(entry["key"], "rb") as handle:
                pem = handle.read()
            parse_pem_private_key(pem)
        except OSError as exc:
            raise PluginError(self.name, "sign", f"{entry['key']}: {exc.strerror}") from None
        except (UnparsableKeyError, ValueError, IndexError) as exc:
            raise PluginError(self.name, "sign", f"{entry['key']}: not an RSA private key "
                              f"in PEM ({exc})") from None
        try:  # compared with the From: domain as IDNA 2008 A-labels
            domain = domains.to_ascii(entry["domain"])
        except domains.DomainError as exc:
            raise PluginError(self.name, "sign", f"{entry['domain']}: {exc}") from None
        return {"domain": domain, "selector": entry["selector"],
                "pem": pem}

    def hook_data_post(self, session: Session) -> HookReturn:
        txn = session.transaction
        if txn is None or txn.body is None:
            return None
        if session.auth_user or (self.opts.sign_relay_clients and session.relay_client):
            self.sign(session, txn)
            return None
        if not self.opts.verify or skipped(session):
            return None
        verdicts = self.verify(session, txn)
        return self.decide(session, verdicts)

    # -- signing ---------------------------------------------------------------
    def sign(self, session: Session, txn: Transaction) -> None:
        import dkim
        headers = parse_headers(body_of(txn))
        from_domain = from_domain_of(headers)
        key = next((k for k in self.keys if from_domain and (
            from_domain == k["domain"] or from_domain.endswith("." + k["domain"]))), None)
        if key is None:
            self.log.info("session %s: not signed, no key for From domain %s", session.id,
                          from_domain or "(none)")
            return
        present = {name.lower() for name in headers}
        include = [h.lower() for h in self.opts.sign_headers if h.lower() in present]
        header, body = self.opts.canonicalization.split("/")
        try:
            signature = dkim.sign(_wire(body_of(txn)), key["selector"].encode(),
                                  key["domain"].encode(), key["pem"],
                                  canonicalize=(header.encode(), body.encode()),
                                  include_headers=[h.encode() for h in include])
        except dkim.DKIMException as exc:  # e.g. a header dkimpy can't parse
            self.log.warning("session %s: not signed: %s", session.id, _reason(exc))
            return
        name, _, value = signature.decode("ascii").rstrip("\r\n").partition(":")
        txn.prepend_header(name, value.strip().replace("\r\n", "\n"))
        txn.notes["dkim_signed"] = key["domain"]
        self.log.info("session %s: signed d=%s s=%s", session.id, key["domain"],
                      key["selector"])

    # -- verifying ---------------------------------------------------------------
    def verify(self, session: Session, txn: Transaction) -> list[DkimVerdict]:
        import authres
        import authres.dkim_b
        import dkim
        serv = authserv_id(self)
        try:
            checker = dkim.DKIM(_wire(body_of(txn)), logger=self.log,
                                timeout=self.opts.dns_timeout)
        except dkim.DKIMException as exc:  # a header section dkimpy can't parse
            signed = b"dkim-signature:" in body_of(txn).header_block.lower()
            txn.notes["dkim"] = [DkimVerdict("permerror", "", reason=_reason(exc))] \
                if signed else []
            add_result(txn, serv, authres.DKIMAuthenticationResult(
                result="permerror" if signed else "none", result_comment="unparsable header"))
            return txn.notes["dkim"]
        count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
        verdicts = [self._verify_one(checker, i)
                    for i in range(min(count, self.opts.max_signatures))]
        txn.notes["dkim"] = verdicts
        if not verdicts:
            add_result(txn, serv, authres.DKIMAuthenticationResult(result="none"))
        for v in verdicts:
            clause = authres.dkim_b.DKIMAuthenticationResult(
                result=v.result, result_comment=v.reason or None, header_d=v.domain or None)
            if v.selector:
                clause.header_s = v.selector
            # header.b last: a b= prefix with "/" or "=" is written quoted,
            # and authres's own parser (like other readers) loses a quoted
            # header.b when another property follows it.
            if v.b:
                clause.header_b = v.b
            add_result(txn, serv, clause)
            self.log.info("session %s: dkim=%s d=%s s=%s %s", session.id, v.result,
                          v.domain, v.selector, v.reason)
        return verdicts

    def _verify_one(self, checker: Any, index: int) -> DkimVerdict:
        import dkim
        missing: list[str] = []

        def txt(name: bytes, timeout: float = 5) -> bytes | None:
            try:
                found = _dns.query(self.resolver, name.decode("ascii", "replace"), "TXT")
            except _dns.DnsTempError as exc:
                raise _KeyTempError(str(exc)) from None
            if not found:
                missing.append(name.decode("ascii", "replace"))
                return None
            return found[0].encode("utf-8")

        verdict = DkimVerdict("permerror", "")
        try:
            ok = checker.verify(idx=index, dnsfunc=txt)
            verdict.result = "pass" if ok else ("permerror" if missing else "fail")
            verdict.reason = f"no key at {missing[0]}" if missing else (
                "" if ok else "signature did not verify")
        except _KeyTempError as exc:
            verdict.result, verdict.reason = "temperror", f"key lookup: {exc}"
        except dkim.ValidationError as exc:
            # dkimpy's one error class for a body hash mismatch (fail) and
            # malformed signature fields (permerror, RFC 8601 2.7.1)
            verdict.reason = _reason(exc)
            verdict.result = "fail" if "body hash mismatch" in str(exc) else "permerror"
        except dkim.DKIMException as exc:
            verdict.reason = f"{type(exc).__name__}: {_reason(exc)}"
        fields = getattr(checker, "signature_fields", None) or {}
        verdict.domain = domains.comparable(_text(fields.get(b"d")))  # A-label, as DMARC aligns
        verdict.selector = _text(fields.get(b"s"))
        verdict.b = "".join(_text(fields.get(b"b")).split())[:8]
        return verdict

    def decide(self, session: Session, verdicts: list[DkimVerdict]) -> HookReturn:
        results = {v.result for v in verdicts}
        if "pass" in results or not results:
            return None
        if "temperror" in results:
            action = self.opts.temperror_action
            text = coded(action, "5.7.20", "4.7.5", "DKIM key lookup failed, try later")
            return act(session, self, action, text)
        if "fail" in results or "permerror" in results:
            action = self.opts.fail_action
            text = coded(action, "5.7.20", "4.7.5", "DKIM signature did not verify")
            return act(session, self, action, text)
        return None


def _wire(body: MessageBody) -> bytes:
    """The message as it came over the wire: CRLF line ends (DKIM hashes those)."""
    return b"".join(body.iter_chunks()).replace(b"\n", b"\r\n")


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _reason(exc: Exception) -> str:
    """A short reason fit for an RFC 8601 comment (no parentheses)."""
    text = str(exc).split(" (", 1)[0]
    return text.replace("(", "").replace(")", "").replace("\\", "")[:80]
