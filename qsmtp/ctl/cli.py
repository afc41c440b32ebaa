"""qsmtpctl: look at and steer a running qsmtp through its registry.

It reads the registry directly (works while the supervisor is wedged) and
never prints a traceback: every failure is one line and an exit code
(1 not running, 2 registry unreadable, 78 bad config, 77 not allowed).
"""

from __future__ import annotations

import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from qsmtp import exitcodes
from qsmtp.ctl import cluster, render
from qsmtp.ctl.common import (
    NotRunningExit,
    attach,
    config_option,
    fail,
    signal_supervisor,
)
from qsmtp.ctl.configcmd import config_group
from qsmtp.ctl.importer.command import import_qpsmtpd
from qsmtp.ctl.metrics import metrics_http
from qsmtp.ctl.users import user_group
from qsmtp.exitcodes import EX_FAIL, EX_OK, EX_SOFTWARE
from qsmtp.log import plural
from qsmtp.pidfile import alive as pid_alive

if TYPE_CHECKING:
    from qsmtp.registry import Registry

EPILOG = (f"Exit codes: {exitcodes.summary()}.  Shell completion: "
          'eval "$(_QSMTPCTL_COMPLETE=bash_source qsmtpctl)" (zsh_source, fish_source).')


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@config_option
def cli() -> None:
    """Status and control of a running qsmtp instance."""


cli.add_command(config_group)
cli.add_command(user_group)
cli.add_command(import_qpsmtpd)
cli.add_command(metrics_http)


def _read(registry: Registry) -> dict[str, Any]:
    from qsmtp.registry import NotRunning

    try:
        return registry.snapshot()
    except Exception as exc:  # the segment vanished under us: it stopped
        raise NotRunning(registry.path) from exc


def _snapshot_or_exit() -> tuple[dict[str, Any], Registry, dict[str, Any]]:
    """-> (settings, registry, snapshot with the published file's details);
    NotRunningExit when nothing runs."""
    settings, registry = attach()
    snap = _read(registry)
    pid = snap["supervisor"]["pid"]
    if not pid_alive(pid):
        registry.detach()
        raise NotRunningExit(f"qsmtp is not running (stale registry at {registry.path}: "
                             f"supervisor pid {pid} is gone)", settings)
    snap["published"] = registry.published()
    snap["cluster"] = cluster.view(settings["path"], render.peers(snap))
    return settings, registry, snap


def _render(snap: dict[str, Any], fmt: str, as_json: bool) -> str:
    now = time.time()
    if as_json or fmt == "json":
        return render.dumps(snap, now)
    if fmt == "prometheus":
        return render.prometheus(snap, now).rstrip("\n")
    return render.human(snap, now)


@cli.command(epilog=EPILOG)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "prometheus"]),
              default="text", show_default=True, help="Output format.")
@click.option("--watch", "-w", "watch", type=float, is_flag=False, flag_value=2.0,
              default=None, metavar="[SECONDS]", help="Redraw every SECONDS (default 2).")
def status(as_json: bool, fmt: str, watch: float | None) -> None:
    """Supervisor, pool and per-worker state (exit 1 when nothing runs: JSON
    then says "running": false, Prometheus qsmtp_up 0)."""
    try:
        _settings, registry, snap = _snapshot_or_exit()
    except NotRunningExit as exc:
        if as_json or fmt == "json":
            click.echo(render.dumps_not_running(str(exc), exc.settings["path"]))
        elif fmt == "prometheus":
            click.echo(render.prometheus_down().rstrip("\n"))
        raise
    if watch is None:
        click.echo(_render(snap, fmt, as_json))
        registry.detach()
        return
    try:
        while True:
            click.clear()
            click.echo(_render(snap, fmt, as_json))
            click.echo(f"\n(every {watch:g} s; Ctrl-C to quit)")
            time.sleep(max(0.1, watch))
            if not registry.exists():
                fail(f"qsmtp stopped (registry at {registry.path} is gone)", EX_FAIL)
            snap = _read(registry)
            snap["published"] = registry.published()
            snap["cluster"] = cluster.view(_settings["path"], render.peers(snap))
    except KeyboardInterrupt:
        click.echo("")
    finally:
        registry.detach()


def _reload_outcome(snap: dict[str, Any], before: dict[str, Any],
                    wait_workers: bool) -> tuple[bool, str] | None:
    """None while the reload is still under way; (ok, line) once decided."""
    sup = snap["supervisor"]
    if sup["reload_status"] == "failed" and sup["reload_time"] > before["time"]:
        reason = render.reload_reason(snap) or "see the journal"
        if sup["state"] == "config-invalid":
            return False, (f"reload failed: {reason}; still answering 421 to every "
                           f"connection until the config is valid")
        return False, f"reload failed: {reason}; generation {sup['generation']} keeps serving"
    if sup["state"] != "running" or sup["generation"] <= before["generation"]:
        return None
    workers = render.as_json(snap, time.time())["workers"]
    if wait_workers and not all(w["generation"] == sup["generation"] for w in workers):
        return None
    if before["state"] == "config-invalid":
        return True, f"config valid: serving again (generation {sup['generation']})"
    if not wait_workers:
        return True, f"reloaded: generation {sup['generation']} accepted (old workers " \
                     f"finish their sessions)"
    return True, (f"reloaded: generation {sup['generation']} serving "
                  f"({plural(len(workers), 'worker')})")


def _follow(registry: Registry, pid: int) -> Registry | None:
    """The registry again if a config-invalid supervisor replaced it by its
    normal one (same pid), else None while that one is being made."""
    from qsmtp.registry import NotRunning, Registry

    if registry.exists():
        return registry
    registry.detach()
    if not pid_alive(pid):
        fail("qsmtp stopped during the reload", EX_FAIL)
    try:
        new = Registry.attach(registry.runtime_dir)
    except NotRunning:
        return None
    if new.snapshot()["supervisor"]["pid"] != pid:
        new.detach()
        fail("qsmtp stopped during the reload", EX_FAIL)
    return new


@cli.command(epilog=EPILOG)
@config_option
@click.option("--timeout", default=30.0, show_default=True, type=float,
              help="Seconds to wait for the outcome.")
@click.option("--wait-workers/--no-wait-workers", default=True, show_default=True,
              help="Wait until every worker runs the new config (busy ones finish their "
                   "session first), or only until the supervisor accepted it.")
def reload(timeout: float, wait_workers: bool) -> None:
    """Re-read the config (SIGHUP) and wait for the outcome: exit 0 when it is
    in service, 1 with the whole reason when it was refused (the old config
    keeps serving)."""
    _settings, registry, snap = _snapshot_or_exit()
    sup = snap["supervisor"]
    pid = sup["pid"]
    before = {"generation": sup["generation"], "time": sup["reload_time"],
              "state": sup["state"]}
    _prove(registry, pid)
    signal_supervisor(pid, signal.SIGHUP, "reload")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        current = _follow(registry, pid)
        if current is None:
            continue
        registry = current
        snap = _read(registry)
        snap["published"] = registry.published()
        outcome = _reload_outcome(snap, before, wait_workers)
        if outcome:
            registry.detach()
            click.echo(outcome[1])
            raise click.exceptions.Exit(EX_OK if outcome[0] else EX_FAIL)
    registry.detach()
    doc = render.as_json(snap, time.time())
    gen = doc["supervisor"]["generation"]
    done = sum(1 for w in doc["workers"] if w["generation"] == gen)
    fail(f"reload not finished after {timeout:g} s: generation {gen}, {done} of "
         f"{len(doc['workers'])} workers on it (busy sessions finish first)", EX_FAIL)


@cli.command(epilog=EPILOG)
@config_option
@click.option("--timeout", default=None, type=float,
              help="Seconds to wait for the stop [default: server.grace + 15].")
def stop(timeout: float | None) -> None:
    """Stop the instance (SIGTERM): sessions finish within server.grace."""
    settings, registry, snap = _snapshot_or_exit()
    pid = snap["supervisor"]["pid"]
    timeout = settings["server.grace"] + 15 if timeout is None else timeout
    unit = _systemd_unit(pid)
    _prove(registry, pid)
    signal_supervisor(pid, signal.SIGTERM, "stop")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not registry.exists() or not pid_alive(pid):
            registry.detach()
            click.echo(f"stopped (pid {pid})")
            if unit:
                click.echo(f"note: {unit} is socket-activated: the next connection starts "
                           f"it again; for a full stop: systemctl stop qsmtp.socket {unit}")
            return
        time.sleep(0.1)
    registry.detach()
    fail(f"qsmtp (pid {pid}) still stopping after {timeout:g} s", EX_FAIL)


def _prove(registry: Registry, pid: int) -> None:
    """Signal only a pid proven to be this qsmtp's supervisor (ctl/proof.py):
    with --user the registry is the service user's to write."""
    from qsmtp.ctl.proof import NotProven, verified_supervisor

    try:
        verified_supervisor(registry, pid)
    except NotProven as exc:
        registry.detach()
        fail(f"refusing to signal: {exc}", EX_FAIL)


def _systemd_unit(pid: int) -> str | None:
    """The .service a supervisor runs in (its cgroup path), else None."""
    try:
        with open(f"/proc/{pid}/cgroup") as handle:
            paths = [line.rstrip("\n").split(":", 2)[2] for line in handle]
    except (OSError, IndexError):
        return None
    for path in paths:
        leaf = path.rsplit("/", 1)[-1]
        if leaf.endswith(".service"):
            return leaf
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point: click's own usage errors keep exit 2; anything unexpected
    becomes one line, never a traceback."""
    from qsmtp.registry import RegistryError

    try:
        cli.main(args=argv, prog_name="qsmtpctl", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except RegistryError as exc:
        click.echo(str(exc), err=True)
        return EX_FAIL
    except Exception as exc:  # noqa: BLE001 - the operator gets one line
        click.echo(f"qsmtpctl: internal error: {exc.__class__.__name__}: {exc}", err=True)
        return EX_SOFTWARE
    return 0


if __name__ == "__main__":
    sys.exit(main())
