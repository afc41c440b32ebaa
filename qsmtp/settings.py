"""Every setting qsmtp knows, declared once.

This table feeds the `qsmtp serve` options, TOML validation, `qsmtpctl config
show` and the settings reference in the docs.  Adding a setting here is all it
takes to get a config key, a flag (if `flags` is set) and validation.

Each section is a frozen dataclass whose fields are its settings (the field
name is the key, its annotation the type, `setting()` the rest): `Config`
carries one instance per section, so `config.server.children` is typed.

Range checks live here and not in click types (docs/REFERENCE.md "`qsmtp
serve` flags"): a value that parses but is wrong must exit 78 naming the key,
not 2 from click.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, get_origin, get_type_hints

from qsmtp import domains

Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    type: type  # int, bool, str or list (of str)
    default: Any
    help: str
    flags: tuple[str, ...] = ()  # qpsmtpd-prefork's names first
    check: Check | None = None
    metavar: str | None = None
    multiple: bool = False  # flag may be repeated (lists)

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def dest(self) -> str:
        """The click parameter name for this setting."""
        return self.key


def setting(default: Any, help: str, *, flags: tuple[str, ...] = (),
            check: Check | None = None, metavar: str | None = None,
            multiple: bool = False) -> Any:
    """A field of a section dataclass below: the rest of its Setting."""
    meta = {"help": help, "flags": flags, "check": check, "metavar": metavar,
            "multiple": multiple}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def between(low: int, high: int, why: str = "") -> Check:
    """`why` says where the upper bound comes from (shown in the error and
    the generated keys table): every number has one, so no value can make
    qsmtp allocate or wait without limit."""
    def check(value: int) -> str | None:
        if low <= value <= high:
            return None
        return (f"must be between {low} and {high} (got {value})"
                + (f": {why}" if why else ""))
    check.bounds = (low, high, why)  # type: ignore[attr-defined]
    return check


# Upper bounds, with their reasons (docs: the keys table shows them).
MAX_CHILDREN = 4096
WHY_CHILDREN = ("each worker is a process (tens of MB) and 2 registry slots; "
                "4096 is beyond any one host")
WHY_WAIT = "a longer wait only holds a worker"


def one_of(*choices: str) -> Check:
    def check(value: str) -> str | None:
        if value in choices:
            return None
        return f"must be one of {', '.join(choices)} (got {value!r})"
    return check


def host_fqdn() -> str:
    """Postfix's myhostname rule: the FQDN of gethostname(), or the short
    name + ".localdomain" when no fully-qualified name is known."""
    import socket

    name = socket.gethostname()
    if "." not in name:
        name = socket.getfqdn(name)  # /etc/hosts first (nsswitch), no DNS when listed
    if "." not in name or name.startswith("localhost"):
        name = socket.gethostname().split(".")[0] + ".localdomain"
    return name.lower()


def parse_listen(entry: str, default_port: int) -> tuple[str, int]:
    """'ADDR[:PORT]' or '[V6]:PORT' -> (host, port). Raises ValueError."""
    entry = entry.strip()
    if entry.startswith("["):
        host, sep, rest = entry[1:].partition("]")
        if not sep:
            raise ValueError(f"unclosed '[' in listen address {entry!r}")
        if rest and not rest.startswith(":"):
            raise ValueError(f"junk after ']' in listen address {entry!r}")
        port_text = rest[1:] if rest else ""
        ipaddress.IPv6Address(host)
    elif entry.count(":") > 1:
        host, port_text = entry, ""  # bare IPv6 without brackets
        ipaddress.IPv6Address(host)
    else:
        host, _, port_text = entry.partition(":")
        if not host:
            host = "0.0.0.0"
        elif host != "localhost":
            ipaddress.IPv4Address(host)
    if port_text:
        if not port_text.isdigit():
            raise ValueError(f"port {port_text!r} is not a number in {entry!r}")
        port = int(port_text)
    else:
        port = default_port
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range in {entry!r}")
    return host, port


def _check_listen(entries: list[str]) -> str | None:
    for entry in entries:
        try:
            parse_listen(entry, 25)
        except ValueError as exc:
            return f"malformed listen address {entry!r}: {exc}"
    return None


def _check_networks(entries: list[str]) -> str | None:
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return f"not an IP network: {entry!r}"
    return None


def _check_services(entries: list[str]) -> str | None:
    for entry in entries:
        if entry.startswith(":"):
            if not entry[1:].isdigit() or not 0 < int(entry[1:]) < 65536:
                return f"not a port (':587'): {entry!r}"
        elif not entry or not entry.isprintable() or " " in entry:
            return f"not a listener name: {entry!r}"
    return None


def _check_domains(entries: list[str]) -> str | None:
    for entry in entries:
        try:  # IDNA 2008: U-labels or A-labels, nothing mapped
            domains.to_ascii(entry[1:] if entry.startswith(".") else entry)
        except domains.DomainError as exc:
            return f"not a domain: {entry!r} ({exc})"
    return None


def _check_redis_url(url: str) -> str | None:
    if url.split("://", 1)[0] in ("redis", "rediss", "unix") and "://" in url:
        return None
    return f"not a redis://, rediss:// or unix:// URL: {url!r}"


@dataclass(frozen=True)
class ServerSettings:
    """[server] -- qpsmtpd-prefork's flags keep their names."""

    me: str = setting("",
        "Host name used in the banner and Received: headers. Empty (the "
        "default): this host's fully-qualified name, as Postfix's myhostname "
        "(gethostname(), its FQDN from /etc/hosts, else NAME.localdomain).")
    listen: list[str] = setting(["0.0.0.0"],
        "Addresses to bind, ADDR[:PORT] or [V6]:PORT; ignored when systemd "
        "passes sockets. Without a port, --port is used.",
        flags=("--listen-address", "--interface"), metavar="ADDR[:PORT]",
        multiple=True, check=_check_listen)
    port: int = setting(2525, "Port for listen addresses given without one.",
        flags=("--port",), check=between(1, 65535, "TCP ports"))
    children: int = setting(15, "Maximum number of worker processes.",
        flags=("--children",), check=between(1, MAX_CHILDREN, WHY_CHILDREN))
    idle_children: int = setting(5, "Spare idle workers kept ready.",
        flags=("--idle-children",), check=between(0, MAX_CHILDREN, WHY_CHILDREN))
    max_from_ip: int = setting(10,
        "Concurrent sessions allowed per client IP; 0 turns the limit off.",
        flags=("--max-from-ip",),
        check=between(0, MAX_CHILDREN, "never more sessions than children"))
    child_lifetime: int = setting(100,
        "Sessions a worker serves before it retires (jittered).",
        flags=("--child-lifetime",),
        check=between(1, 1_000_000, "a worker is recycled to bound leaks"))
    timeout: int = setting(300,
        "Seconds to wait for a command line or DATA bytes, then 421.",
        check=between(1, 3600, "RFC 5321 4.5.3.2 asks for minutes; " + WHY_WAIT))
    databytes: int = setting(26214400,
        "Largest message accepted, in bytes (advertised as SIZE).",
        check=between(1, 1 << 31, "2 GiB: the message is spooled to disk "
                      "and copied into the queue"))
    max_recipients: int = setting(100,
        "Recipients per transaction; more get 452 4.5.3.",
        check=between(1, 100_000, "recipients are kept in memory; "
                      "RFC 5321 asks for 100"))
    max_unrecognized: int = setting(4,
        "Unknown verbs per session before 421 and close.",
        check=between(0, 1000, "a budget, not a way to keep a worker busy"))
    hook_timeout: int = setting(30,
        "Seconds a plugin hook may run before 451 4.3.0.",
        check=between(1, 3600, WHY_WAIT))
    grace: int = setting(30,
        "Seconds sessions may finish after TERM before 421.",
        check=between(0, 3600, "a stop must end"))
    min_data_rate: int = setting(500,
        "Bytes per second a DATA transfer must average once it has run longer "
        "than timeout, else 421 4.4.2 and close; 0 turns it off.",
        check=between(0, 1 << 30, "1 GiB/s: above any link"))
    max_session_time: int = setting(3600,
        "Seconds a whole session may last, then 421 4.4.2 and close; 0 turns it off.",
        check=between(0, 86400, "one day; " + WHY_WAIT))
    runtime_dir: str = setting("/run/qsmtp",
        "Directory for the pid file, the registry id and control files.")
    state_dir: str = setting("/var/lib/qsmtp",
        "Directory for plugin databases (karma, greylisting).")
    pid_file: str = setting("",
        "Write the supervisor pid here; refuse to start if it names a live process.",
        flags=("--pid-file",), metavar="PATH")
    user: str = setting("",
        "Drop to this user (and its groups) after the sockets are open.",
        flags=("--user",), metavar="NAME")
    renice_parent: int = setting(0,
        "Nice increment applied to the supervisor only.",
        flags=("--renice-parent",), check=between(-20, 19, "nice(2) range"))
    pretty_child: bool = setting(False,
        "Show worker state in the process title (qsmtp: worker busy 192.0.2.7).",
        flags=("--pretty-child",))
    detach: bool = setting(False, "Fork into the background.",
        flags=("--detach",))
    debug: bool = setting(False, "Log at debug level.", flags=("--debug",))
    quiet: bool = setting(False, "Log warnings and errors only.",
        flags=("--quiet",))

@dataclass(frozen=True)
class RelaySettings:
    """[relay]: who may relay, and for which domains we accept mail."""

    clients: list[str] = setting(["127.0.0.0/8", "::1/128"],
        "Client networks that may relay to any domain.", check=_check_networks)
    domains: list[str] = setting([],
        "Domains we accept mail for; '.example.test' also matches subdomains. "
        "IDNA 2008 U-labels or A-labels, matched in either form.",
        check=_check_domains)

@dataclass(frozen=True)
class QueueSettings:
    """[queue]: where accepted mail goes."""

    backend: str = setting("maildir",
        "Where accepted mail goes: maildir, smtp or lmtp.",
        check=one_of("maildir", "smtp", "lmtp"))
    path: str = setting("/var/spool/qsmtp/maildir",
        "Maildir for backend=maildir (tmp/new/cur created if missing).")
    upstream: str = setting("",
        "host:port (smtp, lmtp) or unix:/path (lmtp) for hand-off backends.")
    upstream_timeout: int = setting(60,
        "Seconds to wait on the upstream MTA per step.",
        check=between(1, 3600, WHY_WAIT))

@dataclass(frozen=True)
class TlsSettings:
    """[tls]: STARTTLS."""

    cert: str = setting("", "PEM certificate chain; STARTTLS needs cert and key.")
    key: str = setting("", "PEM private key.")

@dataclass(frozen=True)
class AuthSettings:
    """[auth] -- SMTP AUTH (the backends are `auth_*` plugins with an `auth` hook)."""

    plaintext_services: list[str] = setting([],
        "Listeners where AUTH is offered without TLS: systemd FileDescriptorName "
        "names (self-bound listeners are named 'smtp') or local ports as ':587'. "
        "Elsewhere AUTH needs STARTTLS first (538 5.7.11).", check=_check_services)
    max_failures: int = setting(5,
        "Failed AUTH attempts per client IP (IPv6: per /64) within failure_window, "
        "counted across all workers; then AUTH gets 421 4.7.0 and the connection "
        "closes. 0 turns the limit off.",
        check=between(0, 1_000_000, "a count, stored per client IP"))
    failure_window: int = setting(900,
        "Seconds a failed AUTH attempt is remembered.",
        check=between(1, 30 * 86400, "30 days; state is pruned after it"))
    failure_delay: int = setting(2,
        "Seconds to wait before answering a failed AUTH with 535.",
        check=between(0, 60, "the delay holds a worker"))

@dataclass(frozen=True)
class ProxySettings:
    """[proxy] -- PROXY protocol from a load balancer; no [proxy] section: off."""

    protocol: str = setting("v2",
        "PROXY protocol header expected before the greeting: v1, v2 or any.",
        check=one_of("v1", "v2", "any"))
    trusted: list[str] = setting([],
        "Balancer networks allowed to send the header; any other peer, or a "
        "missing or malformed header, is closed without a banner.",
        check=_check_networks)
    services: list[str] = setting([],
        "Listeners that expect the header (systemd FileDescriptorName names, "
        "'smtp' for self-bound ones, or local ports as ':25'); empty: all.",
        check=_check_services)
    timeout: int = setting(5,
        "Seconds a trusted peer has to send the whole header.",
        check=between(1, 60, WHY_WAIT))

@dataclass(frozen=True)
class StateSettings:
    """[state] -- where karma, greylisting, the AUTH failure limit and `limit`
    keep their shared state (one host: SQLite files; several hosts: one Redis)."""

    backend: str = setting("sqlite",
        "Shared state store: sqlite (files in state_dir, shared by the workers of "
        "this host) or redis (shared by every host using the same url).",
        check=one_of("sqlite", "redis"))
    url: str = setting("redis://127.0.0.1:6379/0",
        "Redis server for backend=redis: redis://[:password@]host:port/db, "
        "rediss://... (TLS) or unix:///path.sock?db=N.", check=_check_redis_url)


@dataclass
class Sections:
    """One typed instance per section; the order of these fields is the order
    of the sections in the docs, `config show` and the generated keys table."""

    server: ServerSettings
    relay: RelaySettings
    queue: QueueSettings
    tls: TlsSettings
    auth: AuthSettings
    proxy: ProxySettings
    state: StateSettings


@functools.cache
def _section_types() -> dict[str, type]:
    """{"server": ServerSettings, ...}, in the order of Sections' fields."""
    return get_type_hints(Sections)


def section_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Sections' constructor arguments from {"server.children": 15, ...}."""
    return {name: kind(**{f.name: values[f"{name}.{f.name}"] for f in fields(kind)})
            for name, kind in _section_types().items()}


def _settings() -> tuple[Setting, ...]:
    table = []
    for section, kind in _section_types().items():
        hints = get_type_hints(kind)
        for f in fields(kind):
            default = f.default if f.default_factory is MISSING else f.default_factory()
            table.append(Setting(section, f.name, get_origin(hints[f.name]) or hints[f.name],
                                 default, **f.metadata))
    return tuple(table)


SETTINGS: tuple[Setting, ...] = _settings()
SECTIONS: tuple[str, ...] = tuple(f.name for f in fields(Sections))
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
