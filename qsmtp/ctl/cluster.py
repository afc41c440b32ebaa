"""`qsmtpctl status`: the cluster's view of the clients on this host.

With `[state] backend = "redis"` the `limit` plugin's counters are shared
by every host; for each client IP connected here, status shows them next to
this host's own count (the registry): sessions open on all hosts, and the
connections and recipients inside the rate windows.  Read from the config
file at best effort (a broken file still names its store), never fatal: an
unreachable Redis is one line in the output.
"""

from __future__ import annotations

import time
from typing import Any

from qsmtp.config import Config, peek
from qsmtp.settings import SETTINGS
from qsmtp.state import StateUnavailable
from qsmtp.state.clientlimits import cluster_view


def view(config_path: str | None, local: dict[str, int]) -> dict[str, Any] | None:
    """None unless the store is Redis; else {"store", "error", "peers":
    {ip: {"here", "sessions", "connections", "recipients"}}}."""
    values = peek(config_path, tuple(s.name for s in SETTINGS))
    if values["state.backend"] != "redis":
        return None
    from qsmtp.state.redis import where  # redis-py only when configured (startup time)
    config = Config.build(values, origin={})
    out: dict[str, Any] = {"store": where(values["state.url"]), "error": None, "peers": {}}
    try:
        counts = cluster_view(config, list(local), time.time())
    except StateUnavailable as exc:
        out["error"] = str(exc)
        return out
    out["peers"] = {ip: {"here": local[ip], **counts[ip]} for ip in local}
    return out


def lines(cluster: dict[str, Any] | None) -> list[str]:
    if cluster is None:
        return []
    head = f"cluster view ({cluster['store']})"
    if cluster["error"]:
        return ["", f"{head}: unavailable: {cluster['error']}"]
    if not cluster["peers"]:
        return ["", f"{head}: no client connected here"]
    rows = [f"{ip}: {c['here']} here, {c['sessions']} on all hosts, "
            f"{c['connections']} connections and {c['recipients']} recipients in the "
            f"rate windows" for ip, c in cluster["peers"].items()]
    return ["", f"{head}:", *("  " + row for row in rows)]
