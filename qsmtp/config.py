"""Turn defaults, a TOML file and command-line flags into one validated Config.

Every error is a ConfigError carrying the file, the key and the reason, so the
CLI can print one line and exit 78 (qsmtp.exitcodes.EX_CONFIG) instead of a traceback.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qsmtp.settings import (
    BY_NAME,
    SECTIONS,
    SETTINGS,
    Sections,
    Setting,
    host_fqdn,
    section_values,
)

FLAG_SOURCE = "command line"
# `qsmtp serve` and `qsmtpctl` without --config both use this file when it
# exists, else the built-in defaults: they must agree on the instance.
DEFAULT_PATH = "/etc/qsmtp/qsmtp.toml"


def default_path(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit
    return DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None


class ConfigError(Exception):
    """A config problem, rendered as `source: key: reason` on one line."""

    def __init__(self, source: str, key: str, reason: str):
        super().__init__(f"{source}: {key}: {reason}")
        self.source, self.key, self.reason = source, key, reason


@dataclass
class Config(Sections):
    """Validated settings: `config.server.children`, `config.relay.domains`…
    (one typed, frozen instance per section, see qsmtp.settings.Sections).

    `values` holds the same settings by name ("server.children"), and
    `origin[name]` says where each came from: default, file or flag.
    `plugins` is the ordered `[[plugins]]` list, each a dict with `name`.
    Build one with `Config.build`.
    """

    values: dict[str, Any]
    origin: dict[str, str]
    plugins: list[dict[str, Any]] = field(default_factory=list)
    path: str | None = None
    sections: dict[str, bool] = field(default_factory=dict)  # present in the file
    # `qsmtpctl config check`: plugins verify what they would create, and
    # create nothing.
    check_only: bool = False

    @classmethod
    def build(cls, values: dict[str, Any], origin: dict[str, str],
              **rest: Any) -> Config:
        return cls(**section_values(values), values=values, origin=origin, **rest)

    def get(self, name: str) -> Any:
        return self.values[name]

    def has_section(self, section: str) -> bool:
        return self.sections.get(section, False)


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(path, "-", "no such file") from None
    except PermissionError:
        raise ConfigError(path, "-", "permission denied") from None
    except IsADirectoryError:
        raise ConfigError(path, "-", "is a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "-", f"invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "-", "not UTF-8 text") from None


def _coerce(setting: Setting, value: Any, source: str) -> Any:
    """Check the TOML/flag value's type; bool is not an int here."""
    want = setting.type
    if want is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(source, setting.name, "must be a list of strings")
        return list(value)
    if want is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(source, setting.name, f"must be an integer (got {value!r})")
    if want is bool and not isinstance(value, bool):
        raise ConfigError(source, setting.name, f"must be true or false (got {value!r})")
    if want is str and not isinstance(value, str):
        raise ConfigError(source, setting.name, f"must be a string (got {value!r})")
    return value


def _file_values(data: Mapping[str, Any],
                 path: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, bool]]:
    values: dict[str, Any] = {}
    present: dict[str, bool] = {}
    plugins = data.get("plugins", [])
    for section, table in data.items():
        if section == "plugins":
            continue
        if section not in SECTIONS:
            raise ConfigError(path, section, "unknown section")
        if not isinstance(table, dict):
            raise ConfigError(path, section, "must be a table")
        present[section] = True
        for key, value in table.items():
            setting = BY_NAME.get(f"{section}.{key}")
            if setting is None:
                raise ConfigError(path, f"{section}.{key}", "unknown key")
            values[setting.name] = _coerce(setting, value, path)
    if not isinstance(plugins, list) or not all(isinstance(p, dict) for p in plugins):
        raise ConfigError(path, "plugins", "must be an array of tables ([[plugins]])")
    for index, entry in enumerate(plugins):
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ConfigError(path, f"plugins[{index}].name", "missing plugin name")
    return values, [dict(p) for p in plugins], present


def _cross_checks(values: dict[str, Any], origin: dict[str, str], path: str | None) -> None:
    def where(name: str) -> str:
        return FLAG_SOURCE if origin[name] == "flag" else (path or FLAG_SOURCE)

    if values["server.idle_children"] > values["server.children"]:
        raise ConfigError(where("server.idle_children"), "server.idle_children",
                          f"must not exceed server.children "
                          f"({values['server.idle_children']} > {values['server.children']})")
    if values["queue.backend"] in ("smtp", "lmtp") and not values["queue.upstream"]:
        raise ConfigError(where("queue.upstream"), "queue.upstream",
                          f"required when queue.backend is {values['queue.backend']}")
    if bool(values["tls.cert"]) != bool(values["tls.key"]):
        missing = "tls.key" if values["tls.cert"] else "tls.cert"
        raise ConfigError(where(missing), missing, "tls.cert and tls.key go together")
    if values["server.debug"] and values["server.quiet"]:
        raise ConfigError(where("server.quiet"), "server.quiet", "conflicts with server.debug")


def load(path: str | None = None, flags: Mapping[str, Any] | None = None) -> Config:
    """Build the effective Config. `flags` maps setting names to flag values
    (only flags the user actually gave). Raises ConfigError."""
    values = {s.name: s.default for s in SETTINGS}
    origin = {s.name: "default" for s in SETTINGS}
    plugins: list[dict[str, Any]] = []
    present: dict[str, bool] = {}
    if path:
        file_values, plugins, present = _file_values(read_toml(path), path)
        values.update(file_values)
        origin.update({name: "file" for name in file_values})
    for name, value in (flags or {}).items():
        values[name] = _coerce(BY_NAME[name], value, FLAG_SOURCE)
        origin[name] = "flag"
    for setting in SETTINGS:
        if setting.check is None:
            continue
        reason = setting.check(values[setting.name])
        if reason:
            source = FLAG_SOURCE if origin[setting.name] == "flag" else (path or FLAG_SOURCE)
            raise ConfigError(source, setting.name, reason)
    _cross_checks(values, origin, path)
    if present.get("proxy") and not values["proxy.trusted"]:
        raise ConfigError(path or FLAG_SOURCE, "proxy.trusted",
                          "required when [proxy] is set (the balancers' networks)")
    if not values["server.me"]:
        values["server.me"] = host_fqdn()
    return Config.build(values, origin, plugins=plugins, path=path, sections=present)


def peek(path: str | None, names: tuple[str, ...],
         flags: Mapping[str, Any] | None = None,
         origin: dict[str, str] | None = None) -> dict[str, Any]:
    """Best effort, never raises: the few values needed while the file is
    invalid (where the registry is, the banner host).  Each value the file or
    a flag gives is used when it alone passes its checks, else the default."""
    values = {name: BY_NAME[name].default for name in names}
    data: Mapping[str, Any] = {}
    if path:
        try:
            data = read_toml(path)
        except ConfigError:
            data = _line_by_line(path)
    for name in names:
        check = BY_NAME[name].check
        section, key = name.split(".", 1)
        table = data.get(section)
        candidates = [table.get(key) if isinstance(table, dict) else None,
                      (flags or {}).get(name)]
        for value, where in zip(candidates, ("file", "flag"), strict=True):
            if value is None:
                continue
            try:
                value = _coerce(BY_NAME[name], value, "")
            except ConfigError:
                value = None
            if value is not None and (check is None or not check(value)):
                values[name] = value
                if origin is not None:
                    origin[name] = where
            elif origin is not None:
                origin[name] = f"default (the {where}'s value is invalid)"
        if origin is not None:
            origin.setdefault(name, "default")
    return values


def _line_by_line(path: str) -> dict[str, dict[str, Any]]:
    """What a file that is not valid TOML still says, one `key = value` line
    at a time under its `[section]` (a typo elsewhere must not hide where
    the running instance keeps its registry)."""
    tables: dict[str, dict[str, Any]] = {}
    section = ""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return tables
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):  # [section], or [[plugins]]: not a setting
            section = stripped.strip("[] ")
            continue
        try:
            tables.setdefault(section, {}).update(tomllib.loads(stripped))
        except tomllib.TOMLDecodeError:
            continue
    return tables
