"""The per-client-IP counters of the `limit` plugin, in one place: the
plugin writes them, `qsmtpctl status` reads them (the cluster's view of a
client next to this host's registry).

Three expiring sets per client IP (qsmtp/state/base.py LeaseStore):
sessions alive (members expire `lease` seconds after the session was last
heard of), connections and recipients accepted (members expire after the
rate's window).  SQLite file: `<server.state_dir>/limit.sqlite`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsmtp.state import LeaseStore, lease_store, sqlite_path

if TYPE_CHECKING:
    from qsmtp.config import Config


FILENAME = "limit.sqlite"
SESSIONS, CONNECTIONS, RECIPIENTS = "limit:sessions", "limit:connections", "limit:recipients"
KINDS = (SESSIONS, CONNECTIONS, RECIPIENTS)


def stores(config: Config) -> dict[str, LeaseStore]:
    path = sqlite_path(config, "", FILENAME)
    return {kind: lease_store(config, path, kind) for kind in KINDS}


def cluster_view(config: Config, ips: list[str], now: float) -> dict[str, dict[str, int]]:
    """{ip: {"sessions": n, "connections": n, "recipients": n}} as every host
    sharing the store sees them.  Raises StateUnavailable."""
    sets = stores(config)
    return {ip: {kind.split(":", 1)[1]: sets[kind].count(ip, now) for kind in KINDS}
            for ip in ips}
