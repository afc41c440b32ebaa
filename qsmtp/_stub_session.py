"""TEMPORARY stand-in for qsmtp.smtp.session until the engine lands."""
import socket, time
from dataclasses import dataclass


class AbortSession(BaseException):
    pass


@dataclass
class SessionSummary:
    peer: str = ""
    helo: str | None = None
    sender: str | None = None
    recipients: int = 0
    size: int = 0
    result: str = "closed"
    messages: int = 0
    duration: float = 0.0
    plugin_failed: bool = False


def run_session(app, sock, conn, control=None):
    start = time.monotonic()
    s = SessionSummary(peer=conn.peer_ip)
    f = sock.makefile("rb")
    try:
        sock.sendall(b"220 stub ESMTP\r\n")
        indata = False
        while True:
            if control and control.stopping and not indata:
                sock.sendall(b"421 4.3.2 shutting down\r\n")
                break
            line = f.readline()
            if not line:
                break
            if control:
                control.touch()
            if indata:
                if line == b".\r\n":
                    indata = False
                    s.messages += 1
                    s.result = "accepted"
                    sock.sendall(b"250 2.0.0 ok\r\n")
                continue
            verb = line[:4].upper()
            if verb == b"QUIT":
                sock.sendall(b"221 2.0.0 bye\r\n")
                break
            if verb == b"DATA":
                indata = True
                sock.sendall(b"354 go\r\n")
            elif verb == b"EHLO":
                sock.sendall(b"250-stub\r\n250 PIPELINING\r\n")
            else:
                sock.sendall(b"250 2.0.0 ok\r\n")
    except AbortSession:
        try:
            sock.sendall(b"421 4.3.2 shutting down\r\n")
        except OSError:
            pass
        s.result = "aborted"
    except OSError:
        pass
    s.duration = time.monotonic() - start
    return s
