"""Write qsmtp.8 and qsmtpctl.8 from the click commands themselves, so the
man pages say exactly what `--help` says (no second copy to drift).

Usage: python packaging/manpages.py OUTDIR      (build-deb.sh, build-rpm.sh)
"""

from __future__ import annotations

import os
import sys

import click

from qsmtp import __version__
from qsmtp.cli import cli as qsmtp_cli
from qsmtp.ctl.cli import cli as qsmtpctl_cli

SUMMARY = {
    "qsmtp": "pre-forking, socket-activated SMTP server",
    "qsmtpctl": "status and control of a running qsmtp instance",
}
SEE_ALSO = (("qsmtp", 8), ("qsmtpctl", 8), ("systemctl", 1), ("systemd.socket", 5),
            ("journalctl", 1))


def see_also(name: str) -> list[str]:
    """One `.BR page (n),` request per line (a request must start a line),
    never the page itself."""
    refs = [(page, section) for page, section in SEE_ALSO if page != name]
    return [f".BR {page} ({section})" + ("," if i < len(refs) - 1 else "")
            for i, (page, section) in enumerate(refs)]


def roff(text: str) -> str:
    """Escape what roff would read as requests or escapes."""
    lines = []
    for line in text.replace("\\", "\\e").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def commands(group: click.Command, prefix: list[str]):
    """(path, command) for the command and every subcommand, depth first."""
    yield prefix, group
    if isinstance(group, click.Group):
        for name in sorted(group.commands):
            yield from commands(group.commands[name], prefix + [name])


def _context(command: click.Command, path: list[str]) -> click.Context:
    return click.Context(command, info_name=" ".join(path), terminal_width=78,
                         max_content_width=78)


def page(name: str, root: click.Command) -> str:
    out = [f'.TH {name.upper()} 8 "" "qsmtp {__version__}" "System Administration"',
           ".SH NAME", f"{name} \\- {SUMMARY[name]}", ".SH SYNOPSIS"]
    for path, command in commands(root, [name]):
        if isinstance(command, click.Group) and command is not root:
            continue
        ctx = _context(command, path)
        out += [".PP", ".B " + roff(" ".join(path)),
                roff(" ".join(command.collect_usage_pieces(ctx)))]
    out.append(".SH COMMANDS AND OPTIONS")
    for path, command in commands(root, [name]):
        ctx = _context(command, path)
        out += [".SS " + roff(" ".join(path)), ".nf", roff(command.get_help(ctx)), ".fi"]
    out += [".SH FILES", "/etc/qsmtp/qsmtp.toml, /run/qsmtp/registry, "
            "/var/spool/qsmtp/maildir", ".SH SEE ALSO", *see_also(name),
            ".PP", "The README and the architecture notes: /usr/share/doc/qsmtp/."]
    return "\n".join(out) + "\n"


def main() -> None:
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    for name, root in (("qsmtp", qsmtp_cli), ("qsmtpctl", qsmtpctl_cli)):
        with open(os.path.join(outdir, f"{name}.8"), "w") as handle:
            handle.write(page(name, root))


if __name__ == "__main__":
    main()
