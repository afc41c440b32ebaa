"""Shared bits of the qsmtpctl commands: the --config option (accepted before
or after the subcommand), loading the config, attaching the registry, and
turning every failure into one line plus an exit code."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from qsmtp.config import DEFAULT_PATH, Config, ConfigError, default_path, load, peek
from qsmtp.exitcodes import EX_CONFIG, EX_FAIL, EX_NOPERM, EX_UNREADABLE

if TYPE_CHECKING:
    from qsmtp.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])

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


def config_option(func: F) -> F:
    return click.option(
        "--config", "-c", "config_path", metavar="PATH", expose_value=False,
        callback=_remember, is_eager=True, envvar="QSMTP_CONFIG",
        help=f"Config file of the instance [default: {DEFAULT_PATH} if it exists].",
    )(func)


def config_path(explicit: str | None = None) -> str | None:
    """PATH argument > --config > the default file if present > defaults
    (the same rule as `qsmtp serve`: both find the same instance)."""
    if explicit:
        return explicit
    return default_path(click.get_current_context().meta.get(_META))


def load_config(explicit: str | None = None) -> Config:
    try:
        return load(config_path(explicit))
    except ConfigError as exc:
        fail(str(exc), EX_CONFIG)


def instance_settings() -> dict[str, Any]:
    """What finding and stopping the running instance needs, even from a
    broken file (the fleet keeps running on its old config): a bad file is a
    warning on stderr, its readable values are still used."""
    path = config_path()
    try:
        load(path)
    except ConfigError as exc:
        click.echo(f"qsmtpctl: warning: {exc} (reading the running instance regardless)",
                   err=True)
    values = peek(path, ("server.runtime_dir", "server.grace"))
    values["path"] = path
    return values


def attach() -> tuple[dict[str, Any], Registry]:
    """-> (settings, Registry); exit 1 when nothing runs, 2 when unreadable."""
    from qsmtp.registry import NotRunning, Registry, RegistryPermissionError

    settings = instance_settings()
    try:
        return settings, Registry.attach(settings["server.runtime_dir"])
    except NotRunning as exc:
        raise NotRunningExit(str(exc), settings) from None
    except RegistryPermissionError as exc:
        fail(str(exc), EX_UNREADABLE)


class NotRunningExit(click.ClickException):
    """Nothing runs: one line, exit 1 (`status` adds its own format first)."""

    exit_code = EX_FAIL

    def __init__(self, message: str, settings: dict[str, Any]):
        super().__init__(message)
        self.settings = settings

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.message, err=True)


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
