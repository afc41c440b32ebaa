"""qpsmtpd's `config/plugins` lines (and the files those plugins read) ->
qsmtp `[[plugins]]` tables, the queue, TLS and AUTH.

`map_plugins` walks the plugin list in order; each qpsmtpd plugin name has a
handler in `HANDLERS` (the migration table of docs/PLUGINS.md), plugins qsmtp
does not have are in `DROPPED` with the reason, anything else needs a human.
Arguments are qpsmtpd's `key value` pairs unless a plugin takes positional
ones (loop, count_unrecognized_commands, queue/*, auth/auth_checkpassword).
"""

from __future__ import annotations

from collections.abc import Callable

from qsmtp.ctl.importer import checks
from qsmtp.ctl.importer.model import Translation
from qsmtp.ctl.importer.reader import Line, QpsmtpdDir

Handler = Callable[[QpsmtpdDir, Translation, Line, list[str]], None]

DROPPED = {
    "domainkeys": "DomainKeys is obsolete (RFC 4870 is historic); use the dkim plugin",
    "uribl": "qsmtp has no URI blocklist plugin",
    "milter": "qsmtp has no milter client",
    "dspam": "qsmtp has no dspam plugin; spamassassin is available",
    "dns_whitelist_soft": "qsmtp has no DNS whitelist plugin",
    "quit_fortune": "not carried over (a joke plugin)",
    "ident/geoip": "qsmtp has no GeoIP plugin",
    "ident/p0f": "qsmtp has no p0f plugin",
    "tls_cert": "a certificate generator, not a plugin to run",
    "virus/clamav": "clamscan per message is not supported; use clamd with the clamav plugin",
    "help": "qsmtp answers HELP itself",
    "noop_counter": "qsmtp bounds commands itself (max_unrecognized, timeouts)",
    "dont_require_anglebrackets": "qsmtp follows RFC 5321 paths (angle brackets required)",
    "parse_addr_withhelo": "qsmtp follows RFC 5321 paths",
    "virus/klez_filter": "Klez is a 2002 worm; the clamav plugin finds it and the rest",
    "auth/authdeny": "qsmtp already refuses AUTH that no backend accepts (535)",
}
# Implied in qsmtp: configured by [relay] / always on.
IMPLIED = {
    "relay": "the relay built-in, configured by [relay]",
    "check_relay": "the relay built-in, configured by [relay]",
    "rcpt_ok": "the relay built-in, configured by [relay] domains",
    "headers": None,  # qpsmtpd's `headers` is check_basicheaders' successor: mapped
}


# Files only a plugin reads: unused (and so dropped) when none of them is listed.
READ_BY = {
    "badhelo": ("helo", "check_spamhelo"),
    "badmailfrom": ("badmailfrom", "check_badmailfrom"),
    "badrcptto": ("badrcptto", "check_badrcptto"),
    "dnsbl_zones": ("dnsbl",), "dnsbl_allow": ("dnsbl",), "dnsbl_rejectmsg": ("dnsbl",),
    "rhsbl_zones": ("rhsbl",), "rhsbl_allow": ("rhsbl",),
    "hosts_allow": ("hosts_allow",), "flat_auth_pw": ("auth/auth_flat_file",),
    "invalid_resolvable_fromhost": ("resolvable_fromhost", "require_resolvable_fromhost"),
    "denysoft_greylist": ("greylisting",),
}


def map_plugins(qp: QpsmtpdDir, t: Translation) -> None:
    lines = qp.lines("plugins")
    if not lines:
        t.ask(qp.path("plugins"), "no plugin list: qpsmtpd would run no checks and queue "
                                  "nothing; review the [[plugins]] of the result")
    listed = set()
    for line in lines:
        name, *args = line.text.split()
        name = name.split(":")[0] if "::" not in name else name
        listed.add(name)
        handle_line(qp, t, line, name, args)
    checks.unused_pattern_files(qp, t)
    for name, readers in READ_BY.items():
        if qp.lines(name) and not listed.intersection(readers):
            t.drop(qp.path(name), name, f"read by {' or '.join(readers)}, which "
                                        "config/plugins does not list")
    if "queue.backend" not in t.keys:
        t.ask(qp.path("plugins"), "no queue plugin: qpsmtpd deferred every message (4xx); "
                                  "qsmtp stores into the default maildir "
                                  "/var/spool/qsmtp/maildir: set [queue]")


def handle_line(qp: QpsmtpdDir, t: Translation, line: Line, name: str, args: list[str]) -> None:
    if name.startswith("logging/"):
        t.drop(line.origin, name, "qsmtp logs to the journal (or stderr) itself")
    elif name in DROPPED:
        t.drop(line.origin, name, DROPPED[name])
    elif IMPLIED.get(name):
        t.drop(line.origin, name, f"built in: {IMPLIED[name]}")
        if args:
            t.drop(line.origin, f"{name} arguments {' '.join(args)}", "no such options")
    elif name in HANDLERS or name in checks.HANDLERS:
        before = len(t.plugins)
        (HANDLERS.get(name) or checks.HANDLERS[name])(qp, t, line, args)
        for plugin in t.plugins[before:]:
            plugin.origin = f"{line.origin}: {line.text}"
            t.carried.append(f"{line.origin}: {name} -> [[plugins]] {plugin.name}")
    else:
        t.ask(line.origin, f"plugin {name!r} has no qsmtp counterpart known to the "
                           "importer: find or write one (docs/PLUGINS.md)")


# -- queue -------------------------------------------------------------------------
def _queue_maildir(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    t.set("queue.backend", "maildir", line.origin)
    if args:
        t.set("queue.path", args[0], line.origin)
    if len(args) > 1:
        t.drop(line.origin, f"queue/maildir {' '.join(args[1:])}",
               "per-user maildir templates are not supported: one maildir")


def _queue_smtp_forward(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    if not args:
        t.ask(line.origin, "queue/smtp-forward without a host: set [queue] upstream")
        return
    port = args[1] if len(args) > 1 and args[1].isdigit() else "25"
    host = f"[{args[0]}]" if ":" in args[0] else args[0]
    t.set("queue.backend", "smtp", line.origin)
    t.set("queue.upstream", f"{host}:{port}", line.origin)


def _queue_local_mta(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    name = line.text.split()[0]
    t.set("queue.backend", "smtp", line.origin)
    t.set("queue.upstream", "127.0.0.1:10025", line.origin)
    t.ask(line.origin, f"{name} injected into the local MTA's spool; qsmtp hands mail "
                       "over by SMTP: give the MTA a listener without content filtering "
                       "(e.g. Postfix's 127.0.0.1:10025) and check queue.upstream")


# -- TLS and AUTH ------------------------------------------------------------------
def _tls(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    cert = args[0] if args else qp.path("ssl/qpsmtpd-server.crt")
    key = args[1] if len(args) > 1 else qp.path("ssl/qpsmtpd-server.key")
    t.set("tls.cert", cert, line.origin)
    t.set("tls.key", key, line.origin)
    if len(args) > 2:
        t.drop(line.origin, f"tls CA file {args[2]}", "qsmtp does not ask for client "
                                                     "certificates")
    ciphers = qp.first("tls_ciphers")
    if ciphers:
        t.drop(ciphers.origin, "tls_ciphers",
               "qsmtp uses OpenSSL's defaults with TLS 1.2 at least")


def _auth_flat_file(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    plugin = t.plugin("auth/file", line.origin)
    t.option(plugin, "path", "/etc/qsmtp/users", line.origin)
    _auth_tls(qp, t, line)
    users = [entry.text.split(":", 1)[0] for entry in qp.lines("flat_auth_pw")]
    where = qp.path("flat_auth_pw")
    if users:
        t.ask(where, f"{len(users)} clear-text password(s) not carried over: run "
                     "`qsmtpctl user add NAME` for " + ", ".join(users))
    else:
        t.ask(where, "no users: add them with `qsmtpctl user add NAME`")


def _auth_checkpassword(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    opts = dict(zip(args[::2], args[1::2], strict=False))
    plugin = t.plugin("auth/checkpassword", line.origin)
    program = opts.get("checkpw", "")
    if not program:
        t.ask(line.origin, "auth/auth_checkpassword without `checkpw PROGRAM`: set program")
    t.option(plugin, "program", program, line.origin)
    if opts.get("true"):
        t.option(plugin, "args", [opts["true"]], line.origin)
    _auth_tls(qp, t, line)


def _auth_tls(qp: QpsmtpdDir, t: Translation, line: Line) -> None:
    before = qp.first("tls_before_auth")
    if before and before.text.split()[0] != "0":
        t.carried.append(f"{before.origin}: tls_before_auth: AUTH only after STARTTLS "
                         "(qsmtp's default)")
        return
    t.drop(before.origin if before else line.origin, "AUTH without TLS",
           "qsmtp offers AUTH only inside TLS; list a listener in "
           "auth.plaintext_services to allow it in clear text")


def _unsupported_auth(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    name = line.text.split()[0]
    t.ask(line.origin, f"{name}: qsmtp has auth/file and auth/checkpassword; "
                       "vpopmail, LDAP and CVM work through a checkpassword program")


HANDLERS: dict[str, Handler] = {
    "queue/maildir": _queue_maildir,
    "queue/smtp-forward": _queue_smtp_forward,
    "queue/postfix-queue": _queue_local_mta,
    "queue/qmail-queue": _queue_local_mta,
    "queue/exim-bsmtp": _queue_local_mta,
    "tls": _tls,
    "auth/auth_flat_file": _auth_flat_file,
    "auth/auth_checkpassword": _auth_checkpassword,
    "auth/auth_vpopmail": _unsupported_auth,
    "auth/auth_vpopmaild": _unsupported_auth,
    "auth/auth_vpopmail_sql": _unsupported_auth,
    "auth/auth_ldap_bind": _unsupported_auth,
    "auth/auth_cvm_unix_local": _unsupported_auth,
}
