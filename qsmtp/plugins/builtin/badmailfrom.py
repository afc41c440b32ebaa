"""badmailfrom -- refuse listed envelope senders.

Entries (case-insensitive): `user@domain` (exact address), `@domain` (every
address at that domain), each optionally followed by a space and the reply
text for it; `patterns` are regular expressions (Python `re`, searched in
the address as sent and in its A-label form), optionally followed by a
space/tab and the reply text.  Domains are compared as IDNA 2008 A-labels
(qsmtp.domains): `@straße.test` lists `u@xn--strae-oqa.test` too, and the
other way round; an entry whose domain is not valid IDNA 2008 is a load
error (exit 78).  The
sender is checked at MAIL and refused at RCPT (so the log line carries the
recipient, as qpsmtpd did); the null sender `<>` is never matched.

Options:
- `entries` (list): `user@domain [message]`, `@domain [message]`.
- `patterns` (list): `regex [message]`.
- `file` (path, default ""): a qpsmtpd badmailfrom file read at load (same
  line format, `#` comments) in addition to `entries`.
- `action` (default `deny`): deny, denysoft, deny_disconnect,
  denysoft_disconnect, naughty, note.
- `message` (default `Your envelope sender is in my badmailfrom list`).

qpsmtpd mapping: config/badmailfrom -> `entries` (or `file`);
config/badmailfrom_patterns -> `patterns`; `reject` + `reject_type` -> `action`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from qsmtp import domains
from qsmtp.plugins.api import HookReturn, Option, Params, Plugin, PluginError
from qsmtp.plugins.builtin.naughty import ACTIONS, act

if TYPE_CHECKING:
    from qsmtp.smtp.address import Address
    from qsmtp.smtp.state import Session



class AddressList:
    """Exact, @domain and pattern entries, each with an optional message."""

    def __init__(self, plugin: str, entries: list[object], patterns: list[object],
                 file: str = ""):
        self.exact: dict[str, str | None] = {}
        self.domains: dict[str, str | None] = {}
        self.patterns: list[tuple[re.Pattern[str], str | None]] = []
        lines = list(entries)
        if file:
            try:
                with open(file, encoding="utf-8") as handle:
                    lines += [line for line in handle.read().splitlines()]
            except OSError as exc:
                raise PluginError(plugin, "file", f"{file}: {exc.strerror}") from None
        for line in lines:
            self._add_entry(plugin, line)
        for line in patterns:
            if not isinstance(line, str):
                raise PluginError(plugin, "patterns", f"{line!r} is not text")
            regex, _, message = line.strip().partition("\t") if "\t" in line \
                else line.strip().partition(" ")
            try:
                self.patterns.append((re.compile(regex, re.I), message.strip() or None))
            except re.error as exc:
                raise PluginError(plugin, "patterns", f"{regex!r}: {exc}") from None

    def _add_entry(self, plugin: str, line: Any) -> None:
        if not isinstance(line, str):
            raise PluginError(plugin, "entries", f"{line!r} is not text")
        line = line.strip()
        if not line or line.startswith("#"):
            return
        key, _, message = line.partition(" ")
        local, at, domain = key.rpartition("@")
        if not at or not domain:
            raise PluginError(plugin, "entries", f"{key!r}: want user@domain or @domain")
        try:  # an address literal ([192.0.2.1]) is kept as written
            domain = domain.lower() if domain.startswith("[") else domains.to_ascii(domain)
        except domains.DomainError as exc:
            raise PluginError(plugin, "entries", f"{key!r}: {exc}") from None
        if local:
            self.exact[f"{local.lower()}@{domain}"] = message.strip() or None
        else:
            self.domains[domain] = message.strip() or None

    def match(self, address: Address) -> tuple[bool, str | None]:
        """(matched, entry's own message) for an `Address`."""
        domain = address.ascii_domain
        if domain is not None:
            key = f"{address.local.lower()}@{domain}"
            if key in self.exact:
                return True, self.exact[key]
            if domain in self.domains:
                return True, self.domains[domain]
        forms = {address.address, key} if domain is not None else {address.address}
        for regex, message in self.patterns:
            if any(regex.search(form) for form in forms):
                return True, message
        return False, None


class Badmailfrom(Plugin):
    """Refuses envelope senders listed in `entries`/`patterns`/`file`."""

    options = {
        "entries": Option(list, [], "user@domain or @domain, optional message"),
        "patterns": Option(list, [], "regular expressions, optional message"),
        "file": Option(str, "", "qpsmtpd badmailfrom file read at load"),
        "action": Option(str, "deny", "what a match does", choices=ACTIONS),
        "message": Option(str, "Your envelope sender is in my badmailfrom list", "reply"),
    }

    def setup(self) -> None:
        self.list = AddressList(self.name, self.opts.entries, self.opts.patterns,
                                self.opts.file)

    def hook_mail(self, session: Session, sender: Address | None, params: Params) -> HookReturn:
        if sender is None or sender.is_null or session.transaction is None:
            return None
        matched, message = self.list.match(sender)
        if matched:
            session.transaction.notes["badmailfrom"] = message or self.opts.message
            self.log.info("session %s: sender %s is in badmailfrom", session.id, sender)
        return None

    def hook_rcpt(self, session: Session, recipient: Address, params: Params) -> HookReturn:
        txn = session.transaction
        message = txn.notes.get("badmailfrom") if txn is not None else None
        if message is None:
            return None
        return act(session, self, self.opts.action, message)
