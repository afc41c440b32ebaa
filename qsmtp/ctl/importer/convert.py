"""The whole translation, pure: a qpsmtpd directory (+ an optional defaults
file's text) -> a Translation.  Raises reader.InputError."""

from __future__ import annotations

from qsmtp.ctl.importer import mapping, plugins, prefork
from qsmtp.ctl.importer.model import Translation
from qsmtp.ctl.importer.reader import QpsmtpdDir


def translate(directory: str, defaults: tuple[str, str] | None = None) -> Translation:
    """`defaults` is (path, text) of /etc/default/qpsmtpd or a systemd unit."""
    qp = QpsmtpdDir(directory)
    t = Translation()
    mapping.map_server(qp, t)
    mapping.map_relay(qp, t)
    plugins.map_plugins(qp, t)
    if defaults:
        prefork.map_defaults(defaults[1], defaults[0], t)
    return t
