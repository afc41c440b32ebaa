"""qpsmtpd's server-wide config files -> qsmtp `[server]` and `[relay]` keys.

The plugin list and the files only plugins read are `plugins.py`'s; this
module owns `me`, relaying (`relayclients`, `morerelayclients`, `rcpthosts`,
`morercpthosts`), `databytes`, `timeoutsmtpd`/`timeout`, `loglevel` and the
files qsmtp has no use for.  Pure: a QpsmtpdDir in, a Translation filled.
"""

from __future__ import annotations

import ipaddress

from qsmtp.ctl.importer.model import Translation
from qsmtp.ctl.importer.reader import Line, QpsmtpdDir

# qpsmtpd's relay plugin lets ::1 relay whatever relayclients says.
ALWAYS_RELAY = "::1/128"
# Files qpsmtpd or Debian keep in the directory that mean nothing to qsmtp.
IGNORED = {
    "plugin_dirs": "qsmtp's plugins are Python modules (built-in or on PYTHONPATH)",
    "logging": "qsmtp logs to the journal (or stderr); --debug / --quiet set the level",
    "debconf-settings": "Debian's debconf copy; its flags are read with --defaults",
    "spool_dir": "qsmtp spools large messages in its own temporary files",
    "norelayclients": "qsmtp has no per-IP relay exception list; remove those IPs "
                      "from the relay networks instead",
}


def map_server(qp: QpsmtpdDir, t: Translation) -> None:
    _me(qp, t)
    _databytes(qp, t)
    _timeout(qp, t)
    _loglevel(qp, t)
    for name, why in IGNORED.items():
        if qp.lines(name):
            t.drop(qp.path(name), name, why)


def _me(qp: QpsmtpdDir, t: Translation) -> None:
    line = qp.first("me")
    if line:
        t.set("server.me", line.text.split()[0], line.origin)
    else:
        t.drop(qp.path("me"), "me (absent)",
               "qpsmtpd used the host name, and rcpt_ok accepted mail for it; "
               "qsmtp's server.me defaults to the host's FQDN, which is a relay "
               "domain only if listed in relay.domains")


def _number(t: Translation, line: Line, name: str) -> int | None:
    word = line.text.split()[0]
    if word.isdigit():
        return int(word)
    t.ask(line.origin, f"{name} {word!r} is not a number: set it by hand")
    return None


def _databytes(qp: QpsmtpdDir, t: Translation) -> None:
    line = qp.first("databytes")
    if not line:
        return
    value = _number(t, line, "databytes")
    if value == 0:
        t.drop(line.origin, "databytes 0",
               "qpsmtpd's 0 means no limit; qsmtp always has one (server.databytes "
               "keeps its default, 26214400)")
    elif value is not None:
        t.set("server.databytes", value, line.origin)


def _timeout(qp: QpsmtpdDir, t: Translation) -> None:
    # qpsmtpd reads timeoutsmtpd first and falls back to timeout (qmail's name).
    line = qp.first("timeoutsmtpd") or qp.first("timeout")
    if line:
        value = _number(t, line, "timeout")
        if value:
            t.set("server.timeout", value, line.origin)


def _loglevel(qp: QpsmtpdDir, t: Translation) -> None:
    line = qp.first("loglevel")
    if not line:
        return
    word = line.text.split()[0].upper().removeprefix("LOG")
    levels = {"DEBUG": 7, "INFO": 6, "NOTICE": 5, "WARN": 4, "ERROR": 3, "CRIT": 2,
              "ALERT": 1, "EMERG": 0, "RADAR": 8}
    level = int(word) if word.isdigit() else levels.get(word)
    if level is None:
        t.ask(line.origin, f"loglevel {line.text!r} unknown: choose --debug or --quiet")
    elif level >= 7:
        t.set("server.debug", True, line.origin)
    elif level <= 4:
        t.set("server.quiet", True, line.origin)
    else:
        t.drop(line.origin, f"loglevel {level}", "qsmtp logs at info level by default")


# -- relaying ----------------------------------------------------------------------
def map_relay(qp: QpsmtpdDir, t: Translation) -> None:
    networks: list[str] = []
    origins: list[str] = []
    for line in qp.lines("relayclients") + qp.lines("morerelayclients"):
        network = relay_network(line.text.split()[0])
        if network is None:
            t.ask(line.origin, f"relay client {line.text!r} is not an IP, prefix or CIDR")
        elif network not in networks:
            networks.append(network)
            origins.append(line.origin)
            _ambiguous_ipv6(t, line, network)
    if ALWAYS_RELAY not in networks:
        networks.append(ALWAYS_RELAY)
        origins.append("qpsmtpd's relay plugin always lets ::1 relay")
    t.set("relay.clients", networks, "relayclients, morerelayclients", origins)
    _cdb_only(qp, t, "morerelayclients")
    domains, origins = _domains(qp, t)
    t.set("relay.domains", domains, "me, rcpthosts, morercpthosts", origins)
    _cdb_only(qp, t, "morercpthosts")


def _ambiguous_ipv6(t: Translation, line: Line, network: str) -> None:
    entry = line.text.split()[0]
    last = entry.rstrip(":").split(":")[-1]
    if ":" in entry and "/" not in entry and "::" not in entry and len(last) < 4 \
            and not network.endswith("/128"):
        t.ask(line.origin, f"relay client {entry!r} is a nibble prefix: qpsmtpd matched "
                           f"{network}; write the network you mean if that is not it")


def relay_network(entry: str) -> str | None:
    """qpsmtpd relay entries -> CIDR: `10.1.0.0/24`, `127.0.0.1` (one host),
    `192.168.` (an octet prefix), `2001:db8:e431:ae06:` (a group prefix)."""
    try:
        if "/" in entry:
            return str(ipaddress.ip_network(entry, strict=False))
        if entry.endswith("."):
            octets = entry.rstrip(".").split(".")
            padded = ".".join(octets + ["0"] * (4 - len(octets)))
            return str(ipaddress.ip_network(f"{padded}/{8 * len(octets)}"))
        return str(ipaddress.ip_network(entry))
    except ValueError:
        return _ipv6_prefix(entry)


def _ipv6_prefix(entry: str) -> str | None:
    """qpsmtpd matches IPv6 entries against the expanded address nibble by
    nibble (`2001:0db8:` or `2001:0db8:a`): every group but the last must be
    written with its 4 digits, or the entry matched nothing in qpsmtpd."""
    groups = entry.lower().rstrip(":").split(":")
    if len(groups) < 2 or len(groups) > 8 or not all(
            len(g) == 4 for g in groups[:-1]) or not 1 <= len(groups[-1]) <= 4:
        return None
    if not all(c in "0123456789abcdef" for g in groups for c in g):
        return None
    bits = 16 * (len(groups) - 1) + 4 * len(groups[-1])
    padded = groups[:-1] + [groups[-1].ljust(4, "0")]
    try:
        return str(ipaddress.ip_network(f"{':'.join(padded)}{'::' if len(padded) < 8 else ''}"
                                        f"/{bits}"))
    except ValueError:
        return None


def _domains(qp: QpsmtpdDir, t: Translation) -> tuple[list[str], list[str]]:
    # rcpt_ok accepts `me` as if it were in rcpthosts.
    lines = [line for line in (qp.first("me"),) if line]
    lines += qp.lines("rcpthosts") + qp.lines("morercpthosts")
    domains: list[str] = []
    origins: list[str] = []
    for line in lines:
        domain = line.text.split()[0].lower()
        if domain == "unset":
            t.ask(line.origin, "rcpthosts lists 'unset', Debian's debconf placeholder for "
                               "'no domain given': put the domains you receive mail for "
                               "in relay.domains")
        if domain not in domains:
            domains.append(domain)
            origins.append(line.origin)
    return domains, origins


def _cdb_only(qp: QpsmtpdDir, t: Translation, name: str) -> None:
    if qp.exists(f"{name}.cdb") and not qp.lines(name):
        t.ask(qp.path(f"{name}.cdb"), f"{name}.cdb is a compiled database and its text "
                                      f"source {name} is missing: add its entries by hand")
