"""`qsmtp serve`: options generated from settings.SETTINGS, then the start-up
sequence: config -> sockets -> plugins -> (detach) -> pid file, registry ->
drop privileges -> the supervisor.

Only flags actually given override the file (click's ParameterSource), so a
flag's default never masks a config value.  Values that parse but are wrong
are ConfigErrors: one line `qsmtp: <source>: <key>: <reason>`, exit 78,
before READY=1 and never a traceback.  Usage errors stay click's (exit 2).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from qsmtp import config as config_mod
from qsmtp.config import FLAG_SOURCE, Config, ConfigError
from qsmtp.exitcodes import EX_CONFIG, EX_FAIL, EX_OK
from qsmtp.settings import SETTINGS, Setting

if TYPE_CHECKING:
    from qsmtp.app import App
    from qsmtp.listeners import Listener
    from qsmtp.privileges import Account

log = logging.getLogger("qsmtp")
F = TypeVar("F", bound=Callable[..., Any])


def version() -> str:
    # Imported here, not at the top: importlib.metadata pulls in email, zipfile,
    # csv... (~2 MB) that the supervisor would otherwise carry into every fork.
    from importlib import metadata

    try:
        return metadata.version("qsmtp")
    except metadata.PackageNotFoundError:  # running from a checkout
        return "0+unknown"


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"qsmtp {version()}")
        ctx.exit()


# click.version_option(version()) would look the version up at import time.
version_option = click.option("--version", is_flag=True, expose_value=False, is_eager=True,
                              callback=_show_version, help="Show the version and exit.")


def _option(setting: Setting) -> Callable[[F], F]:
    kwargs: dict[str, Any] = dict(help=setting.help, default=None, show_default=False)
    if setting.type is bool:
        kwargs.update(is_flag=True)
    elif setting.type is list:
        kwargs.update(multiple=True, type=str, metavar=setting.metavar or "TEXT")
    else:
        kwargs.update(type=setting.type, metavar=setting.metavar)
    return click.option(*setting.flags, setting.key, **kwargs)


def setting_options(func: F) -> F:
    for setting in reversed([s for s in SETTINGS if s.flags]):
        func = _option(setting)(func)
    return func


def given_flags(ctx: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """{setting name: value} for the flags on the command line only."""
    flags: dict[str, Any] = {}
    for setting in SETTINGS:
        if not setting.flags:
            continue
        if ctx.get_parameter_source(setting.key) != ParameterSource.COMMANDLINE:
            continue
        value = params[setting.key]
        flags[setting.name] = list(value) if setting.type is list else value
    return flags


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"qsmtp: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["--help", "-h"]})
@version_option
def cli() -> None:
    """qsmtp: a pre-forking SMTP server with qpsmtpd-style plugins."""


SERVE_EPILOG = ("Exit codes: 0 stopped cleanly, 1 cannot start (address in use, pid file, "
                "user switch), 2 usage error, 70 internal error, 78 bad config. Under "
                "socket activation a bad config does not exit: every connection gets "
                "421 4.3.0 until a reload (HUP) finds the file valid.")


@cli.command(epilog=SERVE_EPILOG)
@click.option("--config", "-c", "config_path", metavar="PATH", default=None,
              envvar="QSMTP_CONFIG",
              help=f"TOML config file [default: {config_mod.DEFAULT_PATH} if it exists, "
                   f"else the built-in defaults; qsmtpctl uses the same rule].")
@version_option
@setting_options
@click.pass_context
def serve(ctx: click.Context, config_path: str | None, **params: Any) -> None:
    """Serve SMTP with a pool of pre-forked workers."""
    # No automatic collection in the supervisor (Python's advice for a
    # process that forks without exec): a collection frees objects among the
    # ones every worker shares, and each worker's first allocations then
    # fill those holes, copying the pages. Before each fork gc.freeze()
    # parks what exists; the workers collect again (qsmtp.fleet).
    gc.disable()
    flags = given_flags(ctx, params)
    try:
        sys.exit(_serve(config_path, flags))
    except ConfigError as exc:
        fail(str(exc), EX_CONFIG)


def _checked(config_path: str | None,
             flags: dict[str, Any]) -> tuple[Config, Account | None]:
    """-> (config, account): the file, the flags and the user to run as."""
    from qsmtp import privileges, startpaths

    config = config_mod.load(config_path, flags)
    user, account = config.server.user, None
    if user:
        try:
            account = privileges.lookup(user)
        except KeyError:
            raise ConfigError(_source(config, "server.user", config_path), "server.user",
                              f"no such user {user!r}") from None
    bad = startpaths.problem(config, account)
    if bad:
        raise ConfigError(_source(config, bad[0], config_path), *bad)
    return config, account


def _source(config: Config, name: str, config_path: str | None) -> str:
    """Where the value of setting `name` came from, for a ConfigError."""
    if config.origin[name] == "flag":
        return FLAG_SOURCE
    return config_path or FLAG_SOURCE


def _load(config_path: str | None, flags: dict[str, Any]) -> tuple[Config, App]:
    from qsmtp.app import App

    config, _account = _checked(config_path, flags)
    return config, App.load(config)


def _serve(config_path: str | None, flags: dict[str, Any]) -> int:
    from qsmtp import listeners, pidfile, systemd
    from qsmtp import log as log_mod
    from qsmtp.app import App

    config_path = config_mod.default_path(config_path)
    socks: list[Listener] = []
    try:
        config, account = _checked(config_path, flags)
        server = config.server
        log_mod.setup(debug=server.debug, quiet=server.quiet)
        try:
            if server.pid_file:
                pidfile.check(server.pid_file)
            socks = listeners.open_listeners(server.listen, server.port)
        except (pidfile.PidFileError, listeners.ListenError, ValueError) as exc:
            fail(str(exc), EX_FAIL)
        app = App.load(config)
    except ConfigError as exc:
        inherited = [sock for sock in socks if sock.inherited]
        if not inherited and not (not socks and systemd.socket_activated()):
            listeners.close_all(socks)
            raise  # self-bound: no socket to keep, exit 78
        socks = inherited or listeners.inherit()
        config, app, account = _config_invalid(exc, socks, config_path, flags)
    except BaseException:
        listeners.close_all(socks)
        raise
    if config.server.detach:
        _detach()
    return _run(config_path, flags, app, socks, account)


def _config_invalid(error: ConfigError, socks: list[Listener], config_path: str | None,
                    flags: dict[str, Any]) -> tuple[Config, App, Account | None]:
    """Socket-activated with a bad config: keep systemd's sockets answering
    421 until a HUP finds the file valid (qsmtp.degraded)."""
    from qsmtp import listeners
    from qsmtp import log as log_mod
    from qsmtp.degraded import ConfigInvalid
    from qsmtp.settings import host_fqdn

    log_mod.setup()
    peeked = config_mod.peek(config_path, ("server.runtime_dir", "server.me"), flags)
    host = peeked["server.me"] or host_fqdn()  # the same default as a valid config's
    mode = ConfigInvalid(error=error, listeners=socks, runtime_dir=peeked["server.runtime_dir"],
                         host=host, config_path=config_path,
                         loader=lambda: _load(config_path, flags))
    loaded = mode.run()
    if loaded is None:
        listeners.close_all(socks)
        sys.exit(EX_OK)
    config, app = loaded
    _config, account = _checked(config_path, flags)
    log_mod.setup(debug=config.server.debug, quiet=config.server.quiet)
    return config, app, account


def _run(config_path: str | None, flags: dict[str, Any], app: App, socks: list[Listener],
         account: Account | None) -> int:
    from qsmtp import pidfile, privileges, systemd
    from qsmtp.registry import Registry, RegistryError
    from qsmtp.supervisor import Supervisor

    server = app.config.server
    uid = account.uid if account else None
    gid = account.gid if account else None
    try:
        os.makedirs(server.runtime_dir, mode=0o755, exist_ok=True)  # the pid file may go there
        if server.pid_file:
            pidfile.write(server.pid_file, uid=uid, gid=gid)
        registry = Registry.create(server.runtime_dir, server.children * 2, os.getpid(),
                                   owner_uid=uid, owner_gid=gid)
    except (pidfile.PidFileError, RegistryError, OSError) as exc:
        if server.pid_file:
            pidfile.remove(server.pid_file)
        fail(str(exc), EX_FAIL)
    base_nice = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        if server.renice_parent:
            os.nice(server.renice_parent)  # as root, before the drop: may go negative
        if account:
            privileges.chown_tree(server.runtime_dir, account)
            privileges.drop(account)
    except OSError as exc:
        registry.remove()
        if server.pid_file:
            pidfile.remove(server.pid_file)
        fail(f"cannot switch to user {server.user} / renice: {exc}", EX_FAIL)
    if server.pretty_child:
        import setproctitle

        setproctitle.setproctitle("qsmtp: supervisor")
    if server.detach:
        systemd.mainpid(os.getpid())
    supervisor = Supervisor(app=app, listeners=socks, registry=registry,
                            loader=lambda: _load(config_path, flags),
                            pid_file=server.pid_file,
                            base_nice=base_nice if server.renice_parent else None)
    return supervisor.run()


def _detach() -> None:
    """Classic double fork: the caller returns to its shell at once, the
    grandchild is no session leader and can never regain a terminal."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    # No chdir("/"): relative paths in the config must still mean the same
    # files at the next reload.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    for fd in (1, 2):
        if os.isatty(fd):
            os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="qsmtp")
