#!/usr/bin/env python3
"""Regenerate the generated parts of docs/REFERENCE.md from the code.

    .venv/bin/python scripts/gen-reference.py          # rewrite in place
    .venv/bin/python scripts/gen-reference.py --check  # exit 1 if stale

The page is hand-written prose with regions between `<!-- generated:NAME -->`
and `<!-- /generated:NAME -->`; only those are replaced:
- `flags`: the `qsmtp serve` options (qsmtp/settings.py SETTINGS with flags);
- `keys`: every config key, one table per section (SETTINGS);
- `exitcodes`: qsmtp/exitcodes.py CODES;
- `status-json`: the fields of `qsmtpctl status --json` (qsmtp/ctl/render.py
  as_json on a sample snapshot; each field needs a line in STATUS_FIELDS);
- `hooks`, `results`: the same tables as docs/PLUGINS.md
  (scripts/gen-plugins-doc.py).
After adding a setting, an exit code or a status field: run this script.
"""

from __future__ import annotations

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # also when loaded by path

import _docgen  # noqa: E402

from qsmtp import exitcodes  # noqa: E402
from qsmtp.ctl import render as ctl_render  # noqa: E402
from qsmtp.settings import SECTIONS, SETTINGS, Setting  # noqa: E402

DOC = ROOT / "docs" / "REFERENCE.md"

# `qsmtp serve` options that are not settings.
SERVE_EXTRA = (
    ("`--config PATH`, `-c`", "TOML config file (also `$QSMTP_CONFIG`); without it "
                              "`/etc/qsmtp/qsmtp.toml` when it exists (the file `qsmtpctl` "
                              "also uses), else the built-in defaults."),
    ("`--version`", "Print `qsmtp VERSION` and exit 0."),
    ("`--help`, `-h`", "Usage and every option with its default, exit 0."),
)

# One line per `qsmtpctl status --json` field; a field without one stops the script.
STATUS_FIELDS = {
    "running": "true (when nothing runs: `{\"running\": false, \"reason\": ..., "
               "\"config\": ...}` and exit 1)",
    "config": "path of the config file the instance was started with",
    "config_error": "while the config is invalid under socket activation (every "
                    "connection gets 421): `file: key: reason`, else null",
    "supervisor.pid": "pid of the supervisor (`qsmtp serve`)",
    "supervisor.state": "`starting`, `running`, `reloading`, `stopping`, or "
                        "`config-invalid` (socket-activated with a bad config: no "
                        "workers, every connection gets 421 4.3.0 until a reload "
                        "finds the file valid)",
    "supervisor.generation": "config generation: +1 per successful reload",
    "supervisor.sessions_total": "sessions served since start (kept in the registry "
                                 "header: survives workers retiring)",
    "supervisor.started": "start time (Unix seconds)",
    "supervisor.uptime": "seconds since start",
    "supervisor.reload.status": ("outcome of the last reload: `none` (no reload yet), `ok` "
                                 "or `failed`"),
    "supervisor.reload.reason": "why the last reload failed (`file: key: reason`), else null",
    "supervisor.reload.time": "when the last reload was decided (Unix seconds), else null",
    "supervisor.throttled_until": "while workers die young (boot loop), no new worker "
                                  "before this time (Unix seconds), else null",
    "supervisor.lock_recoveries": "times the registry lock was recovered from a dead holder",
    "pool.max": "most workers (`server.children`)",
    "pool.workers": "live workers",
    "pool.busy": "workers in a session",
    "pool.idle": "workers waiting for a connection",
    "pool.starting": "slots reserved for a worker being forked",
    "pool.idle_children": "spare-worker target (`server.idle_children`, moved by TTIN/TTOU)",
    "pool.max_from_ip": "sessions allowed per client IP (`server.max_from_ip`; 0 = off)",
    "workers[].pid": "worker pid",
    "workers[].state": "`idle` or `busy`",
    "workers[].peer": "client IP of the current session, else null",
    "workers[].service": "listener name of the current session (`smtp`, `submission`, ...)",
    "workers[].since": "when the worker entered its state (Unix seconds)",
    "workers[].for": "seconds in that state",
    "workers[].sessions": "sessions this worker has served",
    "workers[].generation": "config generation the worker runs",
    "workers[].heartbeat_age": "seconds since the worker last showed life",
    "workers[].started": "when the worker was forked (Unix seconds)",
    "peers": "client IP -> concurrent sessions, most first",
    "cluster": "null unless `[state] backend = \"redis\"`; else `store` (URL without "
               "password), `error` (null, or why Redis could not be read) and `peers`: "
               "client IP connected here -> `here` (sessions on this host), `sessions` "
               "(on all hosts), `connections`, `recipients` (inside the `limit` plugin's "
               "rate windows)",
    "consistent": "false when the registry was read without its lock and kept changing "
                  "(the numbers may be off by one session)",
}


def _plugins_doc():
    return _docgen.load_script("gen-plugins-doc.py")


def _toml(value: object) -> str:
    return json.dumps(value)  # TOML and JSON agree on str, int, bool and lists of str


def _type(setting: Setting) -> str:
    return "list of str" if setting.type is list else setting.type.__name__


def flags_table() -> str:
    rows = ["| flag | config key | default | meaning |", "|---|---|---|---|"]
    for setting in SETTINGS:
        if not setting.flags:
            continue
        metavar = "" if setting.type is bool else " " + (setting.metavar or "N")
        names = ", ".join(f"`{flag}{metavar}`" for flag in setting.flags)
        if setting.multiple:
            names += " (repeatable)"
        rows.append(f"| {names} | `{setting.name}` | `{_toml(setting.default)}` "
                    f"| {setting.help} |")
    for names, meaning in SERVE_EXTRA:
        rows.append(f"| {names} | - | - | {meaning} |")
    return "\n".join(rows) + "\n"


def keys_tables() -> str:
    out = []
    for section in SECTIONS:
        out += [f"#### `[{section}]`", "",
                "| key | type | default | range (why the bound) | flag | meaning |",
                "|---|---|---|---|---|---|"]
        for s in (s for s in SETTINGS if s.section == section):
            flag = f"`{s.flags[0]}`" if s.flags else "-"
            out.append(f"| `{s.key}` | {_type(s)} | `{_toml(s.default)}` | {_range(s)} "
                       f"| {flag} | {s.help} |")
        out.append("")
    return "\n".join(out)


def _range(setting) -> str:
    """Every number has an upper bound with its reason (settings.between)."""
    bounds = getattr(setting.check, "bounds", None)
    if not bounds:
        return "-"
    low, high, why = bounds
    return f"{low}..{high}" + (f" ({why})" if why else "")


def exit_codes_table() -> str:
    rows = ["| code | name | when |", "|---|---|---|"]
    rows += [f"| {c.code} | `{c.name}` | {c.meaning} |" for c in exitcodes.CODES]
    return "\n".join(rows) + "\n"


def _sample_snapshot() -> dict:
    now = 1_700_000_000.0
    worker = {"slot": 0, "pid": 101, "generation": 3, "state": "busy", "peer": "192.0.2.7",
              "service": "smtp", "since": now - 12, "heartbeat": now - 1,
              "started": now - 100, "sessions": 40}
    supervisor = {"pid": 4242, "generation": 3, "started": now - 7384, "state": "running",
                  "sessions_total": 18342, "lock_recoveries": 0, "reload_status": "ok",
                  "reload_reason": "", "reload_time": now - 60, "throttled_until": None}
    return {"magic_ok": True, "version": 1, "consistent": True, "supervisor": supervisor,
            "pool": {"max": 15, "slots": 30, "idle_children": 5, "max_from_ip": 10},
            "workers": [worker], "monotonic": now}


def _fields(doc: dict, prefix: str = "") -> list[str]:
    names = []
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "peers":
            names += _fields(value, name + ".")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            names += _fields(value[0], name + "[].")
        else:
            names.append(name)
    return names


def status_json_table() -> str:
    names = _fields(ctl_render.as_json(_sample_snapshot(), 1_700_000_000.0))
    missing = [n for n in names if n not in STATUS_FIELDS]
    if missing:
        raise SystemExit(f"scripts/gen-reference.py: describe {missing} in STATUS_FIELDS")
    rows = ["| field | meaning |", "|---|---|"]
    rows += [f"| `{name}` | {STATUS_FIELDS[name]} |" for name in names]
    return "\n".join(rows) + "\n"


GENERATORS = {
    "flags": flags_table,
    "keys": keys_tables,
    "exitcodes": exit_codes_table,
    "status-json": status_json_table,
    "hooks": lambda: _plugins_doc().hooks_table(),
    "results": lambda: _plugins_doc().results_table(),
}


def render(text: str) -> str:
    return _docgen.render(DOC, text, GENERATORS)


def main(argv: list[str]) -> int:
    return _docgen.main(argv, DOC, render, "scripts/gen-reference.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
