"""`qsmtpctl import-qpsmtpd DIR [-o FILE] [--force] [--defaults FILE]`."""

from __future__ import annotations

import os
import tempfile

import click

from qsmtp.config import ConfigError
from qsmtp.ctl.common import fail
from qsmtp.ctl.importer.convert import translate
from qsmtp.ctl.importer.model import Translation
from qsmtp.ctl.importer.reader import MAX_FILE_BYTES, InputError
from qsmtp.ctl.importer.writer import render
from qsmtp.exitcodes import EX_CONFIG, EX_FAIL, EX_OK

EPILOG = ("Exit codes: 0 the result is valid and nothing needs a human, 1 something "
          "needs a human (listed in the report) or FILE exists, 78 the qpsmtpd "
          "directory or a file it includes cannot be read (nothing is written).")


@click.command("import-qpsmtpd", epilog=EPILOG,
               short_help="Turn a qpsmtpd config directory into a checked qsmtp.toml.")
@click.argument("directory", metavar="DIR")
@click.option("-o", "--output", metavar="FILE", default="qsmtp.toml", show_default=True,
              help="Where to write the qsmtp config; '-' prints it on stdout "
                   "(the report then goes to stderr).")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@click.option("--defaults", "defaults_path", metavar="FILE",
              help="Debian's /etc/default/qpsmtpd (or /etc/qpsmtpd/debconf-settings) "
                   "or a systemd unit: its qpsmtpd-prefork flags (--port, "
                   "--listen-address, --children, --max-from-ip, --user, ...) become "
                   "[server] keys.")
def import_qpsmtpd(directory: str, output: str, force: bool,
                   defaults_path: str | None) -> None:
    """Turn a qpsmtpd config directory (e.g. /etc/qpsmtpd) into a qsmtp.toml.

    DIR is read as qpsmtpd reads it: comments, blank lines, `$include` of files
    and directories (nested, loops refused), the plugin list with its
    arguments, and me, relayclients, morerelayclients, rcpthosts,
    morercpthosts, databytes, timeoutsmtpd, loglevel, badhelo, badmailfrom(_patterns),
    badrcptto(_patterns), dnsbl_zones, dnsbl_allow, rhsbl_zones, hosts_allow,
    tls_before_auth and the queue and auth plugins.  FILE gets every
    key with a comment naming the qpsmtpd file and line it came from, and is
    checked as `qsmtpctl config check` does.  The report lists what was
    carried over, what was dropped and why, and what needs a human (such as
    flat_auth_pw passwords: re-enter them with `qsmtpctl user add`).
    An existing FILE is only replaced with --force.

    \b
    Example:
      qsmtpctl import-qpsmtpd /etc/qpsmtpd -o /etc/qsmtp/qsmtp.toml \\
          --defaults /etc/default/qpsmtpd
    """
    if output != "-" and os.path.lexists(output) and not force:
        fail(f"qsmtpctl: {output} exists: not overwritten (use --force)", EX_FAIL)
    try:
        t = translate(directory, _defaults(defaults_path))
    except InputError as exc:
        fail(f"qsmtpctl: cannot import {directory}: {exc}", EX_CONFIG)
    header = [f"prefork flags from {defaults_path}"] if defaults_path else []
    text = render(t, os.path.abspath(directory), header)
    problem = _write(text, output, force)
    if problem:
        t.ask("stdout" if output == "-" else output,
              f"the result does not pass `qsmtpctl config check`: {problem}")
    report = _report(t, directory, output, problem)
    click.echo(report, err=output == "-")
    raise click.exceptions.Exit(EX_FAIL if t.human else EX_OK)


def _defaults(path: str | None) -> tuple[str, str] | None:
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES or b"\0" in data:
            raise InputError(path, "not a defaults file or systemd unit (binary or too large)")
        return path, data.decode("utf-8")
    except OSError as exc:
        fail(f"qsmtpctl: cannot read {path}: {exc.strerror or exc}", EX_CONFIG)
    except UnicodeDecodeError:
        fail(f"qsmtpctl: cannot read {path}: not UTF-8 text", EX_CONFIG)
    except InputError as exc:
        fail(f"qsmtpctl: cannot read {exc}", EX_CONFIG)


def _write(text: str, output: str, force: bool) -> str | None:
    """Validate `text` as a config file, then put it at `output` (never
    replacing an existing file without `force`).  -> the validation error."""
    folder = os.path.dirname(os.path.abspath(output)) if output != "-" else None
    try:
        # Closed by the `with handle` below: here only its creation may fail.
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115
            "w", suffix=".toml", dir=folder, prefix=".qsmtp-import-", delete=False)
    except OSError as exc:
        fail(f"qsmtpctl: cannot write in {folder}: {exc.strerror or exc}", EX_FAIL)
    try:
        with handle:
            handle.write(text)
        problem = validate(handle.name, output)
        if output == "-":
            click.echo(text, nl=False)
        else:
            _place(handle.name, output, force)
        return problem
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)


def _place(temp: str, output: str, force: bool) -> None:
    os.chmod(temp, 0o644)
    try:
        if force:
            os.replace(temp, output)
        else:
            os.link(temp, output)  # fails if someone created it meanwhile
    except FileExistsError:
        fail(f"qsmtpctl: {output} exists: not overwritten (use --force)", EX_FAIL)
    except OSError as exc:
        fail(f"qsmtpctl: cannot write {output}: {exc.strerror or exc}", EX_FAIL)


def validate(path: str, shown_as: str) -> str | None:
    """`qsmtpctl config check`'s validation of `path`, without side effects:
    the maildir a check would create goes into a throw-away directory."""
    from qsmtp.ctl.configcmd import validate as config_check

    with tempfile.TemporaryDirectory(prefix="qsmtp-import-check-") as scratch:
        try:
            config_check(path, {"queue.path": os.path.join(scratch, "maildir")})
        except ConfigError as exc:
            return f"{exc.key}: {exc.reason}".replace(path, shown_as)
    return None


def _report(t: Translation, directory: str, output: str, problem: str | None) -> str:
    where = "stdout" if output == "-" else output
    lines = [f"imported {directory} -> {where}"]
    for title, items in (("carried over", t.carried), ("dropped", t.dropped),
                         ("needs a human", t.human)):
        lines.append(f"{title} ({len(items)}):")
        lines += [f"  {item}" for item in items] or ["  (nothing)"]
    verdict = f"NOT valid ({problem})" if problem else "valid (qsmtpctl config check passes)"
    lines.append(f"result: {verdict}; {len(t.human)} item(s) need a human")
    return "\n".join(lines)
