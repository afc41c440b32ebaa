"""`qsmtpctl config check` and `qsmtpctl config show`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import click

from qsmtp.config import Config, ConfigError, load, peek
from qsmtp.ctl.common import config_option, config_path, fail, toml_value
from qsmtp.exitcodes import EX_CONFIG, EX_NOPERM
from qsmtp.settings import SECTIONS, SETTINGS


@click.group("config")
@config_option
def config_group() -> None:
    """Validate or show the configuration."""


@config_group.command("check")
@config_option
@click.argument("path", required=False, metavar="[PATH]")
@click.option("--as-user", "as_user", metavar="NAME", default=None,
              help="Check as this user [default: server.user, else the service's "
                   "qsmtp account when it exists].")
def check(path: str | None, as_user: str | None) -> None:
    """Validate a config file and its plugins as a reload of `qsmtp serve`
    would, as the service user, creating nothing.  Exit 78 with `file: key:
    reason` when it is bad, 77 when the caller may not check it."""
    from qsmtp.ctl import checkas

    path = config_path(path)
    try:
        account = checkas.service_user(path, as_user)
    except ConfigError as exc:
        fail(str(exc), EX_CONFIG)
    as_whom = f" (as {account.name})" if account else ""
    if account and os.geteuid() == 0 and account.uid != 0:
        # First as the caller, as `qsmtp serve` loads before it drops: that
        # imports every module the check runs (the service user may not be
        # able to read a checkout in a mode-0700 home), and a config that
        # is invalid for root is invalid for everyone.
        try:
            validate(path, check_only=True)
        except ConfigError as exc:
            fail(str(exc), EX_CONFIG)
        code, message = checkas.run_as(account, lambda: validate(path, check_only=True))
        if code:
            fail(message, code)
    else:
        try:
            validate(path, check_only=True)
        except ConfigError as exc:
            if account and checkas.callers_own_problem(exc, account):
                fail(f"{exc}: cannot check as {account.name} from this account; run as "
                     f"root or as {account.name}", EX_NOPERM)
            fail(str(exc), EX_CONFIG)
        if account and os.geteuid() != account.uid:
            as_whom = ""
    click.echo(f"{path or '(built-in defaults)'}: OK{as_whom}")


def validate(path: str | None, flags: Mapping[str, Any] | None = None,
             check_only: bool = False) -> Config:
    """The one validation `config check` (and `import-qpsmtpd`) runs: the file,
    then its plugins and TLS as `qsmtp serve` loads them.  Raises ConfigError.
    `check_only`: plugins create nothing (the maildir is only checked)."""
    from qsmtp.app import App

    config = load(path, flags)
    config.check_only = check_only
    App.load(config)
    return config


def show_lines(config: Config, listeners: list[dict[str, Any]] | None = None) -> list[str]:
    """TOML-ish: sections in table order, `key = value  # origin`. With the
    running instance's `listeners` from systemd, `listen` shows those (the
    file's value is ignored under socket activation)."""
    lines = [f"# effective configuration of {config.path or '(built-in defaults)'}"]
    for section in SECTIONS:
        rows = [(s.key, toml_value(config.get(s.name)), config.origin[s.name])
                for s in SETTINGS if s.section == section]
        if section == "server" and listeners and any(ln.get("systemd") for ln in listeners):
            rows = [_systemd_listen(listeners) if key == "listen" else (key, value, origin)
                    for key, value, origin in rows]
        width = max(len(f"{key} = {value}") for key, value, _ in rows)
        lines += ["", f"[{section}]"]
        lines += [f"{f'{key} = {value}'.ljust(width)}  # {origin}"
                  for key, value, origin in rows]
    for plugin in config.plugins:
        lines += ["", "[[plugins]]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in plugin.items()]
    return lines


def _systemd_listen(listeners: list[dict[str, Any]]) -> tuple[str, str, str]:
    addresses = toml_value([ln["address"] for ln in listeners])
    names = ", ".join(ln["service"] for ln in listeners)
    return "listen", addresses, f"from systemd ({names}); the file's value is ignored"


def running_listeners(config: Config) -> list[dict[str, Any]] | None:
    """The sockets the running instance serves (published at start), or
    None when none runs or its registry is not ours to read."""
    from qsmtp.registry import NotRunning, Registry, RegistryPermissionError

    try:
        registry = Registry.attach(config.server.runtime_dir)
    except (NotRunning, RegistryPermissionError, OSError):
        return None
    try:
        return registry.published().get("listeners")
    finally:
        registry.detach()


@config_group.command("show")
@config_option
def show() -> None:
    """The effective configuration, each value marked default, file or flag
    (or, for the listen addresses of an instance systemd started, systemd).
    From a broken file: what can be read, the error on stderr, exit 78."""
    path = config_path()
    try:
        config = load(path)
    except ConfigError as exc:
        origin: dict[str, str] = {}
        values = peek(path, tuple(s.name for s in SETTINGS), origin=origin)
        click.echo("\n".join(show_lines(Config.build(values, origin, path=path))))
        fail(f"qsmtpctl: {exc} (values shown: what could be read, defaults elsewhere)",
             EX_CONFIG)
    click.echo("\n".join(show_lines(config, running_listeners(config))))
