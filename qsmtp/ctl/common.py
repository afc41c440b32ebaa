"""Shared bits of the qsmtpctl commands: the --config option (accepted before
or after the subcommand), loading the config, attaching the registry, and
turning every failure into one line plus an exit code."""

from __future__ import annotations

import os
from typing import Any, NoReturn

import click

from qsmtp.config import EX_CONFIG, Config, ConfigError, load
from qsmtp.pidfile import alive as pid_alive  # noqa: F401  (ctl.cli imports it from here)

DEFAULT_CONFIG = "/etc/qsmtp/qsmtp.toml"
EX_OK, EX_FAIL, EX_UNREADABLE, EX_NOPERM, EX_SOFTWARE = 0, 1, 2, 77, 70
_META = "qsmtp.config"


def fail(message: str, code: int = EX_FAIL) -> NoReturn:
    click.echo(message, err=True)
    raise click.exceptions.Exit(code)


def _remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    # Group-level and command-level --config land in the same place; the one
    # given last (after the subcommand) wins.
    if value is not None:
        ctx.meta[_META] = value
    return value


def config_option(func):
    return click.option(
        "--config", "-c", "config_path", metavar="PATH", expose_value=False,
        callback=_remember, is_eager=True, envvar="QSMTP_CONFIG",
        help=f"Config file of the instance [default: {DEFAULT_CONFIG} if it exists].",
    )(func)


def config_path(explicit: str | None = None) -> str | None:
    """PATH argument > --config > the default file if present > defaults."""
    if explicit:
        return explicit
    given = click.get_current_context().meta.get(_META)
    if given:
        return given
    return DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None


def load_config(explicit: str | None = None) -> Config:
    try:
        return load(config_path(explicit))
    except ConfigError as exc:
        fail(str(exc), EX_CONFIG)


def attach():
    """-> (config, Registry); exit 1 when nothing runs, 2 when unreadable."""
    from qsmtp.registry import NotRunning, Registry, RegistryPermissionError

    config = load_config()
    try:
        return config, Registry.attach(config.server.runtime_dir)
    except NotRunning as exc:
        fail(str(exc), EX_FAIL)
    except RegistryPermissionError as exc:
        fail(str(exc), EX_UNREADABLE)


def signal_supervisor(pid: int, signum: int, what: str) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        fail(f"qsmtp is not running (supervisor pid {pid} is gone)", EX_FAIL)
    except PermissionError:
        fail(f"cannot {what} qsmtp (pid {pid}): permission denied (run as root or "
             f"as the service user)", EX_NOPERM)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
