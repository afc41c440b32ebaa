"""qpsmtpd check plugins -> qsmtp's check plugins and their options.

Most qpsmtpd plugins take `key value` pairs, and fold `reject 0|1|naughty`
plus `reject_type perm|temp|disconnect` into what qsmtp calls `action`
(`reject_action`, `fail_action` ... for some).  Lists that qpsmtpd keeps in
files (badmailfrom, dnsbl_zones, ...) become options of the plugin reading them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from qsmtp.ctl.importer.model import PluginOut, Translation
from qsmtp.ctl.importer.reader import Line, QpsmtpdDir

Handler = Callable[[QpsmtpdDir, Translation, Line, list[str]], None]
# What makes a badmailfrom/badrcptto line a regular expression (qpsmtpd's is_match).
ADDRESS_REGEX = re.compile(r"[/^$*+!%?\\]")
HELO_REGEX = re.compile(r"[{}\[\]()^$|*+?\\!]")  # helo's is_in_badhelo
INVALID_FROMHOST = {"invalid_resolvable_fromhost": "invalid_networks"}
GREYLIST_SAME = {k: k for k in ("black_timeout", "grey_timeout", "white_timeout", "mode",
                                "remote_ip", "sender", "recipient", "deny_late")}
GREYLIST_FILES = {"greylist_whitelist_ips": "whitelist_ips",
                  "greylist_whitelist_senders": "whitelist_senders",
                  "greylist_whitelist_rcpts": "whitelist_rcpts"}
SPAMASSASSIN = {"spamd_socket": "address", "reject_threshold": "reject_score",
                "reject": "reject_score", "spamd_user": "user",
                "leave_old_headers": "old_headers"}
HELO_LENIENT_EXTRAS = ["invalid_localhost", "is_bare_ip", "claims_us", "is_forged_literal"]


def pairs(t: Translation, line: Line, args: list[str]) -> dict[str, str]:
    if len(args) % 2:
        t.drop(line.origin, f"argument {args[-1]!r}", "a key without a value")
    return {key.lower(): value for key, value in zip(args[::2], args[1::2], strict=False)}


def action_of(opts: dict[str, str]) -> str | None:
    """qpsmtpd `reject` + `reject_type` -> a qsmtp action (None: keep the default)."""
    reject, kind = opts.get("reject"), opts.get("reject_type", "perm")
    if reject is None:
        return None
    if reject == "0":
        return "note"
    if reject == "naughty":
        return "naughty"
    return {"temp": "denysoft", "disconnect": "deny_disconnect"}.get(kind, "deny")


def _set_action(t: Translation, plugin: PluginOut, line: Line, opts: dict[str, str],
                key: str = "action") -> None:
    action = action_of(opts)
    if action:
        t.option(plugin, key, action, line.origin)
    for used in ("reject", "reject_type"):
        opts.pop(used, None)


def _leftovers(t: Translation, line: Line, name: str, opts: dict[str, str]) -> None:
    for key, value in opts.items():
        t.drop(line.origin, f"{name} {key} {value}", "no such option in qsmtp")


def _simple(name: str, target: str, renames: dict[str, str] | None = None,
            action_key: str | None = "action", files: dict[str, str] | None = None
            ) -> Handler:
    """Plugins whose options are qpsmtpd's under other names (or the same)."""
    def handle(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
        opts = pairs(t, line, args)
        plugin = t.plugin(target, line.origin)
        if action_key:
            _set_action(t, plugin, line, opts, action_key)
        for old, new in (renames or {}).items():
            if old in opts:
                t.option(plugin, new, _typed(opts.pop(old)), line.origin)
        for file, key in (files or {}).items():
            _file_list(qp, t, plugin, file, key, qp.lines(file))
        _leftovers(t, line, name, opts)
    return handle


def _typed(value: str) -> int | float | str:
    if re.fullmatch(r"\d+", value):
        return int(value)
    if re.fullmatch(r"\d+\.\d*", value):
        return float(value)
    return value


def _file_list(qp: QpsmtpdDir, t: Translation, plugin: PluginOut, name: str,
               key: str, lines: list[Line]) -> None:
    if lines:
        t.option(plugin, key, [line.text for line in lines], qp.path(name),
                 [line.origin for line in lines])


def _address_list(kind: str, patterns_file: bool = False) -> Handler:
    """badmailfrom / badrcptto: entries and regex lines of config/KIND; the
    KIND_patterns file only for check_KIND_patterns (qpsmtpd < 0.94 read it
    there alone).  Both plugins listed -> one table."""
    def handle(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
        opts = pairs(t, line, args)
        plugin = t.plugin(kind, line.origin)
        _set_action(t, plugin, line, opts)
        _leftovers(t, line, kind, opts)
        name = f"{kind}_patterns" if patterns_file else kind
        if name in plugin.sources:
            return
        plugin.sources.add(name)
        listed = qp.lines(name)
        plain = [] if patterns_file else [
            entry for entry in listed if not ADDRESS_REGEX.search(entry.text.split()[0])]
        _file_list(qp, t, plugin, name, "entries", plain)
        regex = [entry for entry in listed if entry not in plain]
        if regex:
            before = plugin.options.get("patterns")
            texts = (before.value if before else []) + [entry.text for entry in regex]
            origins = ((before.origins or []) if before else []) + [entry.origin for entry in regex]
            t.option(plugin, "patterns", texts, qp.path(name), origins)
    return handle


def unused_pattern_files(qp: QpsmtpdDir, t: Translation) -> None:
    read = {source for plugin in t.plugins for source in plugin.sources}
    for name in ("badmailfrom_patterns", "badrcptto_patterns"):
        if qp.lines(name) and name not in read:
            t.drop(qp.path(name), name, f"qpsmtpd reads it only with check_{name}, "
                                        "which config/plugins does not list")


def _helo(policy_default: str | None) -> Handler:
    def handle(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
        opts = pairs(t, line, args)
        plugin = t.plugin("helo", line.origin)
        _set_action(t, plugin, line, opts)
        if "policy" in opts:
            t.option(plugin, "policy", opts.pop("policy"), line.origin)
        elif policy_default is None:  # check_spamhelo: only the badhelo list
            t.option(plugin, "skip", HELO_LENIENT_EXTRAS, line.origin)
        _leftovers(t, line, "helo", opts)
        listed = qp.lines("badhelo")
        _file_list(qp, t, plugin, "badhelo", "bad_helo",
                   [b for b in listed if not HELO_REGEX.search(b.text)])
        _file_list(qp, t, plugin, "badhelo", "bad_helo_patterns",
                   [b for b in listed if HELO_REGEX.search(b.text)])
    return handle


def _zone_list(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str], name: str,
               zone: Callable[[str], str | dict]) -> PluginOut | None:
    """What dnsbl and rhsbl share: the action arguments, `<name>_zones` (one
    zone a line, read by `zone`) and `<name>_allow`.  No zones: the plugin is
    dropped (None), as qsmtp refuses an empty zone list."""
    opts = pairs(t, line, args)
    plugin = t.plugin(name, line.origin)
    _set_action(t, plugin, line, opts)
    _leftovers(t, line, name, opts)
    entries = qp.lines(f"{name}_zones")
    if not entries:
        t.drop(line.origin, name, f"no zones in {name}_zones: the plugin would check "
                                  "nothing (qsmtp refuses an empty zone list)")
        t.plugins.remove(plugin)
        return None
    t.option(plugin, "zones", [zone(entry.text) for entry in entries], qp.path(f"{name}_zones"),
             [entry.origin for entry in entries])
    _file_list(qp, t, plugin, f"{name}_allow", "allow", qp.lines(f"{name}_allow"))
    return plugin


def _dnsbl_zone(text: str) -> str | dict:
    zone, _, match = text.partition(":")
    return {"zone": zone.strip(), "match": [match.strip()]} if match.strip() else zone.strip()


def _rhsbl_zone(text: str) -> str | dict:
    zone, _, message = text.partition(" ")
    return {"zone": zone, "message": message.strip()} if message.strip() else zone


def _dnsbl(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    plugin = _zone_list(qp, t, line, args, "dnsbl", _dnsbl_zone)
    if plugin is None:
        return
    message = qp.first("dnsbl_rejectmsg")
    if message:
        t.option(plugin, "message", message.text, message.origin)


def _rhsbl(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    _zone_list(qp, t, line, args, "rhsbl", _rhsbl_zone)


def _hosts_allow(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    plugin = t.plugin("hosts_allow", line.origin)
    _file_list(qp, t, plugin, "hosts_allow", "rules", qp.lines("hosts_allow"))
    if args:
        t.drop(line.origin, f"hosts_allow {' '.join(args)}",
               "the connection limit is server.max_from_ip (--max-from-ip)")


def _positional(target: str, key: str) -> Handler:
    """`loop 50`, `count_unrecognized_commands 4`: one number."""
    def handle(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
        plugin = t.plugin(target, line.origin)
        if args and args[0].isdigit():
            t.option(plugin, key, int(args[0]), line.origin)
        elif args:
            t.drop(line.origin, f"{target} {' '.join(args)}", "not a number")
    return handle


def _earlytalker(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    opts = pairs(t, line, args)
    plugin = t.plugin("earlytalker", line.origin)
    old = opts.pop("action", None)
    if old:  # check_earlytalker's `action deny|denysoft|log`
        t.option(plugin, "action", {"log": "note"}.get(old, old), line.origin)
    _set_action(t, plugin, line, opts)
    if "wait" in opts:
        t.option(plugin, "wait", float(_typed(opts.pop("wait"))), line.origin)
    if "defer-reject" in opts:
        t.option(plugin, "defer_reject", opts.pop("defer-reject") != "0", line.origin)
    if "check-at" in opts:
        t.option(plugin, "check_at", opts.pop("check-at").lower(), line.origin)
    _leftovers(t, line, "earlytalker", opts)


def _spf(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    opts = pairs(t, line, args)
    plugin = t.plugin("spf", line.origin)
    given = opts.pop("reject", opts.pop("spf_deny", "1"))
    level = int(given) if given.isdigit() else 1
    ladder = [(1, "fail_action", "note"), (1, "softfail_action", "note"),
              (1, "neutral_action", "note"), (1, "permerror_action", "note"),
              (1, "temperror_action", "note"), (2, "temperror_action", "denysoft"),
              (3, "fail_action", "deny"), (3, "softfail_action", "denysoft"),
              (4, "softfail_action", "deny"), (4, "permerror_action", "denysoft"),
              (5, "neutral_action", "deny"), (6, "permerror_action", "deny")]
    chosen = {key: value for at, key, value in ladder if level >= at}
    for key, value in chosen.items():
        t.option(plugin, key, value, line.origin)
    _leftovers(t, line, "sender_permitted_from", opts)


def _greylisting(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    # Options come from the plugin line and from config/denysoft_greylist.
    extra = [word for entry in qp.lines("denysoft_greylist") for word in entry.text.split()]
    _simple("greylisting", "greylisting", GREYLIST_SAME, None, GREYLIST_FILES)(
        qp, t, line, args + extra)
    plugin = t.plugin("greylisting", line.origin)
    for key in ("remote_ip", "sender", "recipient", "deny_late"):
        if key in plugin.options:
            plugin.options[key].value = bool(plugin.options[key].value)
    if "db_dir" in args:
        directory = args[args.index("db_dir") + 1]
        t.option(plugin, "db_path", f"{directory}/greylisting.sqlite", line.origin)


def _spamassassin(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    _simple("spamassassin", "spamassassin", SPAMASSASSIN, None)(qp, t, line, args)
    address = t.plugin("spamassassin", line.origin).options.get("address")
    if address and str(address.value).startswith("/"):
        address.value = f"unix:{address.value}"  # qpsmtpd: a path is spamd's socket


def _clamdscan(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    opts = pairs(t, line, args)
    plugin = t.plugin("clamav", line.origin)
    if "clamd_socket" in opts:
        address = opts.pop("clamd_socket")
        t.option(plugin, "address", address if ":" in address else f"unix:{address}",
                 line.origin)
    if opts.get("max_size", "").isdigit():
        t.option(plugin, "max_size", int(opts.pop("max_size")) * 1024, line.origin)
    if "defer_on_error" in opts:
        t.option(plugin, "on_error", "pass" if opts.pop("defer_on_error") == "0"
                 else "defer", line.origin)
    if opts.pop("deny_viruses", "yes") != "yes":
        t.drop(line.origin, "deny_viruses no", "qsmtp's clamav always refuses viruses")
    _leftovers(t, line, "virus/clamdscan", opts)


def _basicheaders(qp: QpsmtpdDir, t: Translation, line: Line, args: list[str]) -> None:
    opts = pairs(t, line, args)
    plugin = t.plugin("basicheaders", line.origin)
    _set_action(t, plugin, line, opts)
    days = opts.pop("days", None)
    for key, qkey in (("past", "past_days"), ("future", "future_days")):
        value = opts.pop(key, days)
        if value and value.isdigit():
            t.option(plugin, qkey, int(value), line.origin)
    if "require" in opts:
        t.option(plugin, "require", opts.pop("require").split(","), line.origin)
    _leftovers(t, line, "basicheaders", opts)


HANDLERS: dict[str, Handler] = {
    "badmailfrom": _address_list("badmailfrom"),
    "check_badmailfrom": _address_list("badmailfrom"),
    "check_badmailfrom_patterns": _address_list("badmailfrom", True),
    "badrcptto": _address_list("badrcptto"),
    "check_badrcptto": _address_list("badrcptto"),
    "check_badrcptto_patterns": _address_list("badrcptto", True),
    "helo": _helo("lenient"),
    "check_spamhelo": _helo(None),
    "dnsbl": _dnsbl,
    "rhsbl": _rhsbl,
    "hosts_allow": _hosts_allow,
    "loop": _positional("loop", "max_hops"),
    "check_loop": _positional("loop", "max_hops"),
    "count_unrecognized_commands": _positional("count_unrecognized_commands", "count"),
    "earlytalker": _earlytalker,
    "check_earlytalker": _earlytalker,
    "sender_permitted_from": _spf,
    "fcrdns": _simple("fcrdns", "fcrdns"),
    "naughty": _simple("naughty", "naughty", {"reject": "reject",
                                              "reject_type": "reject_type"}, None),
    "dkim": _simple("dkim", "dkim", action_key="fail_action"),
    "dmarc": _simple("dmarc", "dmarc", action_key="reject_action"),
    "resolvable_fromhost": _simple("resolvable_fromhost", "resolvable_fromhost",
                                   files=INVALID_FROMHOST),
    "require_resolvable_fromhost": _simple("resolvable_fromhost", "resolvable_fromhost",
                                           files=INVALID_FROMHOST),
    "karma": _simple("karma", "karma", {"negative": "negative",
                                        "penalty_days": "penalty_days"}),
    "greylisting": _greylisting,
    "spamassassin": _spamassassin,
    "virus/clamdscan": _clamdscan,
    "headers": _basicheaders,
    "check_basicheaders": _basicheaders,
}
