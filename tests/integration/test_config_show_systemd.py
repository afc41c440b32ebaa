"""`qsmtpctl config show` names the sockets a socket-activated instance
really serves (systemd's, via systemd-socket-activate here), not the file's
ignored `listen`; without a running instance it shows the file's value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers.server import wait_for

QSMTPCTL = str(Path(sys.executable).with_name("qsmtpctl"))


def _show(srv) -> str:
    result = subprocess.run([QSMTPCTL, "config", "show", "--config", str(srv.config_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _listen_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("listen = "))


def test_config_show_lists_the_sockets_systemd_hands_over(serve):
    srv = serve(start=False, socket_activate=["smtp", "submission"], children=3,
                idle_children=1, listen=["127.0.0.1:1"])
    assert _listen_line(_show(srv)).startswith('listen = ["127.0.0.1:1"]')  # nothing runs
    srv.start()
    sock = srv.activate()
    try:
        wait_for(lambda: srv.notify.first("READY=1"), 10, what="READY=1")
        line = _listen_line(_show(srv))
    finally:
        sock.close()
    expected = f'listen = ["127.0.0.1:{srv.ports[0]}", "127.0.0.1:{srv.ports[1]}"]'
    assert line.startswith(expected), line
    assert line.endswith("# from systemd (smtp, submission); the file's value is ignored"), line
