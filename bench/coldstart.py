"""Cold start on socket activation: systemd-socket-activate holds the
listening socket; the first connection makes it exec `qsmtp serve`; we time
connect() -> first 220 line, as a client of a fresh qsmtp.socket sees it."""
import socket
import subprocess
import time

ACTIVATE = "/usr/bin/systemd-socket-activate"


def _wait_listening(port, proc, timeout=10.0):
    """systemd-socket-activate binds before it prints anything; poll the
    port with a probe that is NOT a connection (that would activate it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"systemd-socket-activate exited {proc.returncode}")
        with open("/proc/net/tcp") as f:
            want = f":{port:04X}"
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                if fields[1].endswith(want) and fields[3] == "0A":   # LISTEN
                    return
        time.sleep(0.01)
    raise RuntimeError(f"port {port} never listened")


def cold_start(qsmtp_bin, config, port, log, env=None):
    """Seconds from the first connect() to the 220 banner, and the process
    (still running: the caller stops it by PID)."""
    cmd = [ACTIVATE, "-l", f"127.0.0.1:{port}", qsmtp_bin, "serve",
           "--config", str(config)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    _wait_listening(port, proc)
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        line = s.makefile("rb").readline()
        dt = time.monotonic() - t0
        if not line.startswith(b"220"):
            raise RuntimeError(f"cold start: got {line[:80]!r}")
        s.sendall(b"QUIT\r\n")
    finally:
        s.close()
    return dt, proc
