"""The shipped metrics units' command, run the way qsmtp-metrics.socket runs
it (systemd-socket-activate --accept --inetd: one process per connection,
the connection on stdin/stdout), scraped over HTTP by urllib while a real
qsmtp serve runs, then after it stopped."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

from helpers.server import ACTIVATE, connect, free_port, wait_for

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "qsmtp-metrics@.service"
QSMTPCTL = str(Path(sys.executable).with_name("qsmtpctl"))


def exec_start(config: Path) -> list[str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(UNIT)
    argv = shlex.split(parser["Service"]["ExecStart"])
    assert argv[:2] == ["/usr/bin/qsmtpctl", "metrics-http"]
    return [QSMTPCTL, *[str(config) if a == "/etc/qsmtp/qsmtp.toml" else a for a in argv[1:]]]


def scrape(port: int) -> tuple[int, str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read().decode()


def test_scrape_through_socket_activation(serve):
    srv = serve(children=4, idle_children=2)
    port = free_port()
    activate = subprocess.Popen([ACTIVATE, "--accept", "--inetd", "-l", f"127.0.0.1:{port}",
                                 *exec_start(srv.config_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client, banner = connect(srv.port)
        assert banner.startswith(b"220")
        status, kind, text = wait_for(lambda: _try(port), 10, what="the metrics socket")
        assert status == 200 and kind.startswith("text/plain; version=0.0.4")
        metrics = dict(line.split(" ", 1) for line in text.splitlines()
                       if line and not line.startswith("#") and "{" not in line)
        assert metrics["qsmtp_up"] == "1"
        assert int(metrics["qsmtp_workers_busy"]) >= 1
        assert 'qsmtp_peer_sessions{peer="127.0.0.1"} 1' in text
        client.close()
        srv.stop()
        status, _, text = scrape(port)
        assert status == 200 and "qsmtp_up 0" in text
    finally:
        activate.terminate()
        activate.wait(5)


def _try(port: int):
    try:
        return scrape(port)
    except OSError:
        return None
