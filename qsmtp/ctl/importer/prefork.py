"""qpsmtpd-prefork's command-line flags, found in a Debian /etc/default/qpsmtpd
(or the package's debconf-settings: `PORT=`, `INTERFACES=`, `RUNAS=`,
`EXTRA_ARGS=`, `OPTIONS=`) or in a systemd unit's `ExecStart=` -> `[server]` keys.
Pure: the file's text in, the Translation filled.
"""

from __future__ import annotations

import shlex

from qsmtp.ctl.importer.model import Translation

# flag (long and short) -> (qsmtp key, type); qpsmtpd-prefork's getopt names.
FLAGS = {
    "--port": ("server.port", int), "-p": ("server.port", int),
    "--listen-address": ("server.listen", list), "--interface": ("server.listen", list),
    "-l": ("server.listen", list),
    "--children": ("server.children", int), "-c": ("server.children", int),
    "--idle-children": ("server.idle_children", int), "-i": ("server.idle_children", int),
    "--max-from-ip": ("server.max_from_ip", int), "-m": ("server.max_from_ip", int),
    "--user": ("server.user", str), "-u": ("server.user", str),
    "--pid-file": ("server.pid_file", str),
    "--renice-parent": ("server.renice_parent", int),
    "--pretty-child": ("server.pretty_child", bool),
}
SKIPPED = {"--detach": "systemd runs qsmtp in the foreground (Type=notify)",
           "-d": "systemd runs qsmtp in the foreground (Type=notify)",
           "--debug": "use --debug on qsmtp serve when needed",
           "--quiet": "use --quiet on qsmtp serve when needed"}


def map_defaults(text: str, path: str, t: Translation) -> None:
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        origin = f"{path}:{lineno}"
        if line.startswith("ExecStart="):
            words = _split(line.partition("=")[2], origin, t)
            map_flags(words[1:], origin, t)  # words[0] is the program
            continue
        key, sep, val = line.partition("=")
        if not sep or line.startswith("#"):
            continue
        # The init script expands $VAR unquoted: the value is split into words.
        words = [word for part in _split(val, origin, t) for word in part.split()]
        if key == "PORT" and words:
            map_flags(["--port", words[0]], origin, t)
        elif key == "RUNAS" and words:
            map_flags(["--user", words[0]], origin, t)
        elif key == "INTERFACES" and words and words != ["unset"]:
            map_flags([w for word in words for w in ("--listen-address", word)], origin, t)
        elif key in ("EXTRA_ARGS", "OPTIONS", "DAEMON_OPTS"):
            map_flags(words, origin, t)


def _split(text: str, origin: str, t: Translation) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError as exc:
        t.ask(origin, f"cannot split {text.strip()!r}: {exc}")
        return []


def map_flags(words: list[str], origin: str, t: Translation) -> None:
    index = 0
    while index < len(words):
        flag, _, inline = words[index].partition("=")
        index += 1
        if flag in SKIPPED:
            t.drop(origin, flag, SKIPPED[flag])
            continue
        if flag not in FLAGS:
            t.ask(origin, f"unknown qpsmtpd-prefork flag {words[index - 1]!r}")
            continue
        key, kind = FLAGS[flag]
        if kind is bool:
            t.set(key, True, origin)
            continue
        value = inline or (words[index] if index < len(words) else "")
        index += 0 if inline else 1
        _store(t, key, kind, value, origin, flag)


def _store(t: Translation, key: str, kind: type, value: str, origin: str, flag: str) -> None:
    if kind is int:
        if not value.lstrip("-").isdigit():
            t.ask(origin, f"{flag} {value!r} is not a number")
            return
        t.set(key, int(value), origin)
    elif kind is list:
        current = t.keys[key].value if key in t.keys else []
        t.set(key, current + [value], origin)
    else:
        t.set(key, value, origin)
