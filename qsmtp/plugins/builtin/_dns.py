"""Shared DNS plumbing for the DNS-based plugins (dnsbl, rhsbl, fcrdns, helo,
resolvable_fromhost): resolver construction from plugin options, and small
lookups that tell "no such record" apart from "DNS is broken right now".

Every DNS plugin takes these options (merged into its own `options`):

- `nameservers` (list of IP strings, default `[]` = the system resolver,
  /etc/resolv.conf): the servers to ask. Tests always set this to a loopback
  server, so no query leaves the machine.
- `dns_port` (int, default 53): port of those nameservers.
- `dns_timeout` (float seconds, default 5.0): total time budget of one lookup
  (keep it below `server.hook_timeout`).
- `dns_cache` (int, default 256): answers each worker keeps, for as long as
  their TTL says (dnspython's LRU cache; negative answers only when the
  server sends the SOA that gives their TTL); 0 = ask every time. One cache
  per worker and set of nameservers, shared by the plugins that ask them:
  the same client's PTR, HELO name, SPF and DKIM records are asked once per
  TTL, not once per session.

dnspython is imported lazily so that a server without it still starts when no
DNS plugin is configured; a DNS plugin without it fails at load with a clear
PluginError.
"""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING

from qsmtp import domains
from qsmtp.plugins.api import Option, Plugin, PluginError

if TYPE_CHECKING:
    import logging

    from dns.resolver import LRUCache, Resolver


DNS_OPTIONS = {
    "nameservers": Option(list, [], "nameserver IPs; [] = system resolver (resolv.conf)"),
    "dns_port": Option(int, 53, "port of the nameservers", bounds=(1, 65535)),
    "dns_timeout": Option(float, 5.0, "seconds for one lookup, retries included",
                          bounds=(0.1, 3600)),
    "dns_cache": Option(int, 256, "answers kept per worker for their TTL; 0 = no cache",
                        bounds=(0, 100000)),
}

# (nameservers, port, size) -> the LRU cache their resolvers share.  Built
# at plugin load, before the fork: every worker starts with it empty.
_caches: dict[tuple[tuple[str, ...], int, int], LRUCache] = {}


class RecordMemo:
    """query()'s own answers, in front of dnspython's cache of the same
    servers: a hit is one dict lookup, where dnspython would parse the name
    and build a resolution (~0.1 ms) to find the same answer.  Bounded;
    the oldest entry goes first; an entry lives as long as its answer's TTL."""

    def __init__(self, size: int):
        self.size = size
        self.entries: dict[tuple[str, str], tuple[float, list[str]]] = {}

    def get(self, key: tuple[str, str]) -> list[str] | None:
        hit = self.entries.get(key)
        if hit is None:
            return None
        if hit[0] <= time.time():
            del self.entries[key]
            return None
        return hit[1]

    def put(self, key: tuple[str, str], expires: float, records: list[str]) -> None:
        if len(self.entries) >= self.size and key not in self.entries:
            del self.entries[next(iter(self.entries))]
        self.entries[key] = (expires, records)


# id(the LRUCache in _caches) -> its RecordMemo (the caches live as long
# as the process, so their ids are never reused).
_memos: dict[int, RecordMemo] = {}


class DnsTempError(Exception):
    """SERVFAIL, timeout, no answer from any server: try again later."""


def make_resolver(plugin: Plugin) -> Resolver:
    """Build a dnspython Resolver from the plugin's options. Called in setup():
    a Resolver holds no sockets, so it is safe to share across fork()."""
    try:
        import dns.resolver
    except ImportError:
        raise PluginError(plugin.name, "name", "needs dnspython (python3-dnspython)") from None
    opts = plugin.opts
    servers = list(opts.nameservers)
    for server in servers:
        try:
            ipaddress.ip_address(server)
        except (ValueError, TypeError):
            raise PluginError(plugin.name, "nameservers",
                              f"{server!r} is not an IP address") from None
    if not 1 <= opts.dns_port <= 65535:
        raise PluginError(plugin.name, "dns_port", "must be 1..65535")
    if opts.dns_timeout <= 0:
        raise PluginError(plugin.name, "dns_timeout", "must be > 0")
    if servers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = servers
    else:
        resolver = dns.resolver.Resolver(configure=True)
    resolver.port = opts.dns_port
    resolver.lifetime = float(opts.dns_timeout)
    resolver.timeout = min(float(opts.dns_timeout), 2.0)  # per try, then retry
    resolver.cache = _cache_for(tuple(servers), resolver.port, opts.dns_cache)
    return resolver


def _cache_for(servers: tuple[str, ...], port: int, size: int) -> LRUCache | None:
    """The cache of answers from these servers (None when off); keyed by
    servers too, so two sets of nameservers never see each other's answers."""
    if size <= 0:
        return None
    import dns.resolver
    key = (servers, port, size)
    if key not in _caches:
        _caches[key] = dns.resolver.LRUCache(max_size=size)
        _memos[id(_caches[key])] = RecordMemo(size)
    return _caches[key]


def query(resolver: Resolver, name: str, rdtype: str) -> list[str]:
    """Records of `rdtype` at `name` as text; [] for NXDOMAIN / no data.
    Raises DnsTempError when the answer can't be had right now."""
    memo = _memos.get(id(resolver.cache)) if resolver.cache is not None else None
    hit = memo.get((name, rdtype)) if memo is not None else None
    if hit is not None:
        return hit
    records = _ask(resolver, name, rdtype)
    if memo is not None and records[1]:
        memo.put((name, rdtype), records[0], records[1])
    return records[1]


def _ask(resolver: Resolver, name: str, rdtype: str) -> tuple[float, list[str]]:
    """(expiry time, records) from the resolver, for query()."""
    import dns.exception
    import dns.name
    import dns.resolver
    try:  # A-labels under IDNA 2008; dnspython would apply IDNA 2003 to Unicode
        name = domains.lookup_name(name)
    except domains.DomainError:
        return 0.0, []  # no such name can exist
    try:
        answer = resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return 0.0, []
    except (dns.resolver.NoNameservers, dns.exception.Timeout,
            dns.resolver.LifetimeTimeout) as exc:
        raise DnsTempError(f"{name}/{rdtype}: {type(exc).__name__}") from None
    except dns.exception.DNSException as exc:  # bad name etc.: treat as absent
        if isinstance(exc, (dns.name.LabelTooLong, dns.name.NameTooLong,
                            dns.name.EmptyLabel)):
            return 0.0, []
        raise DnsTempError(f"{name}/{rdtype}: {type(exc).__name__}: {exc}") from None
    if answer.rrset is None:
        return 0.0, []
    if rdtype == "TXT":
        return answer.expiration, [b"".join(r.strings).decode("utf-8", "replace")
                                   for r in answer.rrset]
    return answer.expiration, [r.to_text() for r in answer.rrset]


def addresses(resolver: Resolver, name: str) -> list[str]:
    """A and AAAA of `name` (either may be empty)."""
    return query(resolver, name, "A") + query(resolver, name, "AAAA")


def ptr_names(resolver: Resolver, ip: str) -> list[str]:
    import dns.reversename
    names = query(resolver, dns.reversename.from_address(ip).to_text(), "PTR")
    return [n.rstrip(".").lower() for n in names]


def reversed_ip(ip: str) -> str:
    """DNSBL form of an IP: 1.2.3.4 -> 4.3.2.1, IPv6 -> reversed nibbles."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    if addr.version == 4:
        return ".".join(reversed(str(addr).split(".")))
    return ".".join(reversed(addr.exploded.replace(":", "")))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def ip_in(ip: str, networks: list[Network]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr.version == n.version and addr in n for n in networks)


def parse_networks(plugin_name: str, key: str, entries: list[object]) -> list[Network]:
    """CIDR strings -> ip_network list; bad entries fail at load."""
    nets: list[Network] = []
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise PluginError(plugin_name, key, f"{entry!r} is not an IP network") from None
    return nets


# -- DNS lists (dnsbl, rhsbl) -------------------------------------------
# Answers in 127.255.255.0/24 are list operators' error codes ("you query
# through an open resolver", "rate limited"), never a listing.
_LIST_ERRORS = ipaddress.ip_network("127.255.255.0/24")


class Zone:
    """One DNS list: its name, what to do on a hit, which A answers count."""

    def __init__(self, zone: str, action: str,
                 match: list[ipaddress.IPv4Address | ipaddress.IPv6Address], message: str | None):
        self.zone, self.action, self.match, self.message = zone, action, match, message

    def counts(self, answer: str) -> bool:
        try:
            addr = ipaddress.ip_address(answer)
        except ValueError:
            return False
        if addr in _LIST_ERRORS:
            return False
        return not self.match or addr in self.match


class Listing:
    def __init__(self, zone: Zone, query: str, answers: list[str], txt: str):
        self.zone, self.query, self.answers, self.txt = zone, query, answers, txt

    def __repr__(self) -> str:
        return f"Listing({self.zone.zone!r}, {self.answers!r}, {self.txt!r})"


def parse_zones(plugin_name: str, entries: list[object], default_action: str,
                actions: tuple[str, ...]) -> list[Zone]:
    """`zones` option: "bl.example" or {zone, action, match = [IP...], message}."""
    zones = []
    for entry in entries:
        if isinstance(entry, str):
            entry = {"zone": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("zone"), str):
            raise PluginError(plugin_name, "zones", f"{entry!r}: want a name or "
                              "{zone = ..., action = ..., match = [...]}")
        unknown = set(entry) - {"zone", "action", "match", "message"}
        if unknown:
            raise PluginError(plugin_name, "zones", f"unknown key(s) {sorted(unknown)}")
        action = entry.get("action", default_action)
        if action not in actions:
            raise PluginError(plugin_name, "zones", f"{entry['zone']}: action must be "
                              f"one of {', '.join(actions)}")
        match = entry.get("match", [])
        match = [match] if isinstance(match, str) else match
        try:
            match = [ipaddress.ip_address(m) for m in match]
        except (ValueError, TypeError):
            raise PluginError(plugin_name, "zones", f"{entry['zone']}: match must be "
                              "IP addresses") from None
        message = entry.get("message")
        if message is not None and not isinstance(message, str):
            raise PluginError(plugin_name, "zones", f"{entry['zone']}: message must be text")
        try:
            zone = domains.to_ascii(entry["zone"].strip("."))
        except domains.DomainError as exc:
            raise PluginError(plugin_name, "zones", f"{entry['zone']}: {exc}") from None
        zones.append(Zone(zone, action, match, message))
    return zones


def check_zones(resolver: Resolver, prefix: str, zones: list[Zone],
                log: logging.Logger) -> Listing | None:
    """First zone listing `prefix` (reversed IP or domain). A zone that can't
    be asked right now counts as not listing (fail open, like qpsmtpd), with
    a log line."""
    for zone in zones:
        name = f"{prefix}.{zone.zone}"
        try:
            hits = [a for a in query(resolver, name, "A") if zone.counts(a)]
            if not hits:
                continue
            txt = " ".join(query(resolver, name, "TXT"))
        except DnsTempError as exc:
            log.warning("DNS list %s: %s", zone.zone, exc)
            continue
        return Listing(zone, name, hits, txt)
    return None
