"""Registry snapshot -> what `qsmtpctl status` prints: the human screen, the
JSON document (a stable contract, docs/REFERENCE.md "status --json") and Prometheus text.

Pure functions of (snapshot, now) so they are unit-tested without a registry.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from qsmtp.ctl.cluster import lines as cluster_lines
from qsmtp.log import plural

TOP_PEERS = 5


def _workers(snap: dict[str, Any]) -> list[dict[str, Any]]:
    """Live workers only: a slot reserved before fork has no pid yet."""
    return [w for w in snap["workers"] if w["pid"] and w["state"] in ("idle", "busy")]


def pool_counts(snap: dict[str, Any]) -> dict[str, int]:
    workers = _workers(snap)
    busy = sum(1 for w in workers if w["state"] == "busy")
    maximum = snap["pool"]["max"] or snap["pool"]["slots"]
    if snap["supervisor"]["state"] == "config-invalid":
        maximum = 0  # no worker until the config is valid
    return {"max": maximum, "workers": len(workers), "busy": busy,
            "idle": len(workers) - busy,
            "starting": sum(1 for w in snap["workers"] if w not in workers),
            "idle_children": snap["pool"]["idle_children"],
            "max_from_ip": snap["pool"]["max_from_ip"]}


def peers(snap: dict[str, Any]) -> dict[str, int]:
    """IP -> concurrent sessions, most first."""
    counts = Counter(w["peer"] for w in _workers(snap)
                     if w["state"] == "busy" and w["peer"])
    return dict(counts.most_common())


def reload_reason(snap: dict[str, Any]) -> str:
    """The whole reason from the published file (the header keeps 40 bytes)."""
    sup = snap["supervisor"]
    published = (snap.get("published") or {}).get("reload") or {}
    if published.get("status") == sup["reload_status"] and published.get("reason"):
        return str(published["reason"])
    return sup["reload_reason"]


def as_json(snap: dict[str, Any], now: float) -> dict[str, Any]:
    sup = snap["supervisor"]
    published = snap.get("published") or {}
    workers = []
    for w in _workers(snap):
        workers.append({
            "pid": w["pid"], "state": w["state"], "peer": w["peer"],
            "service": w["service"], "since": w["since"],
            "for": round(max(0.0, now - w["since"]), 3) if w["since"] else None,
            "sessions": w["sessions"], "generation": w["generation"],
            # heartbeats are CLOCK_MONOTONIC, read with the snapshot
            "heartbeat_age": round(max(0.0, snap["monotonic"] - w["heartbeat"]), 3)
            if w["heartbeat"] and "monotonic" in snap else None,
            "started": w["started"],
        })
    return {
        "running": True,
        "config": published.get("config"),
        "config_error": published.get("config_error"),
        "supervisor": {
            "pid": sup["pid"], "state": sup["state"], "generation": sup["generation"],
            "sessions_total": sup["sessions_total"], "started": sup["started"],
            "uptime": round(max(0.0, now - sup["started"]), 3) if sup["started"] else None,
            "reload": {"status": sup["reload_status"], "reason": reload_reason(snap) or None,
                       "time": sup["reload_time"] or None},
            "throttled_until": sup["throttled_until"],
            "lock_recoveries": sup["lock_recoveries"],
        },
        "pool": pool_counts(snap),
        "workers": workers,
        "peers": peers(snap),
        "cluster": snap.get("cluster"),  # qsmtp/ctl/cluster.py; None without Redis
        "consistent": snap["consistent"],
    }


def dumps(snap: dict[str, Any], now: float) -> str:
    return json.dumps(as_json(snap, now), indent=2, sort_keys=False)


def dumps_not_running(reason: str, config: str | None) -> str:
    return json.dumps({"running": False, "reason": reason, "config": config}, indent=2)


def duration(seconds: float | None) -> str:
    """Compact, human: 45s, 3m12s, 2h03m, 4d07h."""
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def human(snap: dict[str, Any], now: float) -> str:
    sup, pool = snap["supervisor"], pool_counts(snap)
    config = (snap.get("published") or {}).get("config")
    lines = [
        f"qsmtp supervisor pid {sup['pid']} · {sup['state']} · generation "
        f"{sup['generation']} · up {duration(now - sup['started'] if sup['started'] else None)}",
        f"{pool['workers']}/{pool['max']} workers · {pool['busy']} busy · "
        f"{pool['idle']} idle · {plural(sup['sessions_total'], 'session')}",
        f"config {config or '(built-in defaults)'}",
    ]
    lines += _warnings(snap, pool, now)
    lines += ["", _table(snap, now)]
    top = list(peers(snap).items())[:TOP_PEERS]
    if top:
        lines += ["", "top clients: " + ", ".join(f"{ip} ({n})" for ip, n in top)]
    lines += cluster_lines(snap.get("cluster"))
    return "\n".join(lines)


def _warnings(snap: dict[str, Any], pool: dict[str, int], now: float) -> list[str]:
    sup, out = snap["supervisor"], []
    if sup["state"] == "config-invalid":
        error = (snap.get("published") or {}).get("config_error") or "see the journal"
        out.append(f"CONFIG INVALID: {error}; every connection gets 421 4.3.0 until it "
                   f"is fixed (then: systemctl reload qsmtp, or qsmtpctl reload)")
    if pool["workers"] >= pool["max"] and pool["busy"] >= pool["max"]:
        out.append(f"WARNING: pool at max ({pool['max']} workers, all busy): new "
                   f"connections wait in the listen queue; raise server.children?")
    elif pool["workers"] >= pool["max"]:
        out.append(f"note: pool at max ({pool['max']} workers)")
    if sup["reload_status"] == "failed":
        out.append(f"last reload FAILED: {reload_reason(snap)} (generation "
                   f"{sup['generation']} keeps serving)")
    elif sup["reload_status"] == "ok" and sup["reload_time"]:
        out.append(f"last reload ok, {duration(now - sup['reload_time'])} ago")
    if sup["throttled_until"] and sup["throttled_until"] > now:
        out.append(f"throttled: workers dying at start, next spawn in "
                   f"{sup['throttled_until'] - now:.1f} s")
    if not snap["consistent"]:
        out.append("note: registry read without its lock; figures may be a moment off")
    return out


def _table(snap: dict[str, Any], now: float) -> str:
    rows = [("PID", "STATE", "PEER", "SERVICE", "FOR", "SESSIONS", "GEN")]
    for w in _workers(snap):
        rows.append((str(w["pid"]), w["state"], w["peer"] or "-", w["service"] or "-",
                     duration(now - w["since"]) if w["since"] else "-",
                     str(w["sessions"]), str(w["generation"])))
    if len(rows) == 1:
        return "(no workers)"
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width)
                               for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


_METRICS = (  # name, type, help, value(json)
    ("qsmtp_up", "gauge", "1 when the registry of a running supervisor was read.",
     lambda j: 1),
    ("qsmtp_config_valid", "gauge",
     "0 while the supervisor answers 421 to everyone because its config is invalid.",
     lambda j: 0 if j["supervisor"]["state"] == "config-invalid" else 1),
    ("qsmtp_workers", "gauge", "Live worker processes.", lambda j: j["pool"]["workers"]),
    ("qsmtp_workers_busy", "gauge", "Workers in an SMTP session.",
     lambda j: j["pool"]["busy"]),
    ("qsmtp_workers_idle", "gauge", "Workers waiting for a connection.",
     lambda j: j["pool"]["idle"]),
    ("qsmtp_workers_max", "gauge", "Configured maximum workers (server.children).",
     lambda j: j["pool"]["max"]),
    ("qsmtp_idle_children", "gauge", "Configured spare workers (server.idle_children).",
     lambda j: j["pool"]["idle_children"]),
    ("qsmtp_sessions_total", "counter", "SMTP sessions finished since the supervisor started.",
     lambda j: j["supervisor"]["sessions_total"]),
    ("qsmtp_supervisor_start_time_seconds", "gauge", "Supervisor start, Unix time.",
     lambda j: j["supervisor"]["started"]),
    ("qsmtp_generation", "gauge", "Config generation (incremented by each reload).",
     lambda j: j["supervisor"]["generation"]),
    ("qsmtp_last_reload_success", "gauge", "0 when the last reload was refused.",
     lambda j: 0 if j["supervisor"]["reload"]["status"] == "failed" else 1),
    ("qsmtp_registry_lock_recoveries_total", "counter",
     "Times a wedged registry lock was recovered.",
     lambda j: j["supervisor"]["lock_recoveries"]),
)


def prometheus(snap: dict[str, Any], now: float) -> str:
    """Prometheus text exposition format 0.0.4."""
    doc, out = as_json(snap, now), []
    for name, kind, text, value in _METRICS:
        out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value(doc)}"]
    out += ["# HELP qsmtp_peer_sessions Concurrent sessions per client IP (top "
            f"{TOP_PEERS * 2}).", "# TYPE qsmtp_peer_sessions gauge"]
    for ip, count in list(doc["peers"].items())[:TOP_PEERS * 2]:
        out.append(f'qsmtp_peer_sessions{{peer="{ip}"}} {count}')
    return "\n".join(out) + "\n"


def prometheus_down() -> str:
    """Nothing runs: the scrape still succeeds and says so."""
    name, kind, text, _value = _METRICS[0]
    return f"# HELP {name} {text}\n# TYPE {name} {kind}\n{name} 0\n"
