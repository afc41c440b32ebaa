"""CPU profile of the per-message path, in one process (cProfile with a CPU
clock, so waiting on the client or the disk does not count):

    .venv/bin/python bench/profile/cprofile_session.py [--messages 2000] [--reuse]

Loads the app exactly as `qsmtp serve` does (config, plugins, logging to a
file), then serves smtp-source's connections one after the other through the
real engine (run_session), as a worker does, and prints where the CPU went.
"""
import argparse
import cProfile
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))   # the repository: qsmtp

from qsmtp import config as config_mod  # noqa: E402
from qsmtp import log as log_mod  # noqa: E402
from qsmtp.app import App  # noqa: E402
from qsmtp.smtp.session import run_session  # noqa: E402
from qsmtp.smtp.state import ConnectionInfo  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--top", type=int, default=35)
    ap.add_argument("--no-profile", action="store_true",
                    help="just measure user/sys CPU per message")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qsmtp-cprof-"))
    cfg = work / "qsmtp.toml"
    cfg.write_text(f"""[server]
me = "bench.example.test"
listen = ["127.0.0.1:2"]
runtime_dir = "{work}"
[relay]
clients = ["127.0.0.0/8"]
domains = ["example.com"]
[queue]
path = "{work / 'maildir'}"
""")
    config = config_mod.load(str(cfg), {})
    log_mod.setup()
    # INFO lines, as a worker writes them; open until the process ends
    sys.stderr = open(work / "log", "w")  # noqa: SIM115
    log_mod.setup()
    app = App.load(config)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(128)
    port = lsock.getsockname()[1]
    argv = ["/usr/sbin/smtp-source", "-s", "1", "-m", str(a.messages), "-l", "5000",
            "-f", "sender@example.com", "-t", "rcpt@example.com", "-M", "client.example.com"]
    if a.reuse:
        argv.append("-d")
    client = subprocess.Popen(argv + [f"127.0.0.1:{port}"])
    prof = cProfile.Profile(time.process_time)
    served = 0
    lsock.settimeout(2.0)
    cpu0, t0 = time.process_time(), os.times()
    while client.poll() is None or served == 0:
        try:
            conn, addr = lsock.accept()
        except TimeoutError:
            continue
        conn.setblocking(True)
        info = ConnectionInfo(addr[0], addr[1], "127.0.0.1", port, "smtp")
        if not a.no_profile:
            prof.enable()
        run_session(app, conn, info, None)
        if not a.no_profile:
            prof.disable()
        served += 1
    cpu, t1 = time.process_time() - cpu0, os.times()
    stored = len(os.listdir(work / "maildir" / "new"))
    n = max(stored, 1)
    print("served %d connections, %d messages stored, %.3f ms CPU/msg (user %.3f, sys %.3f)%s"  # noqa: UP031
          % (served, stored, cpu * 1000 / n, (t1.user - t0.user) * 1000 / n,
             (t1.system - t0.system) * 1000 / n, "" if a.no_profile else ", profiled"),
          file=sys.__stdout__)
    if a.no_profile:
        return
    st = pstats.Stats(prof, stream=sys.__stdout__)
    st.sort_stats("tottime").print_stats(a.top)
    st.sort_stats("cumulative").print_stats(a.top)


if __name__ == "__main__":
    main()
