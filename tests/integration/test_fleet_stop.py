"""TERM semantics, from the client's side: a transaction in flight finishes,
then 421 (before the next command is read); a silent session gets 421 when grace ends."""

from __future__ import annotations

import signal
import time

from helpers.server import connect


def expect(sock, command: bytes | None, code: bytes) -> bytes:
    if command is not None:
        sock.sendall(command)
    data = b""
    while not data.endswith(b"\r\n") or data.splitlines()[-1][3:4] == b"-":
        chunk = sock.recv(4096)
        assert chunk, f"closed while waiting for {code!r} after {command!r}"
        data += chunk
    assert data.startswith(code), (command, data)
    return data


def test_transaction_in_flight_finishes_then_421(serve):
    srv = serve(children=3, idle_children=1, grace=10)
    sock, line = connect(srv.port)
    assert line.startswith(b"220")
    expect(sock, b"EHLO client.test\r\n", b"250")
    expect(sock, b"MAIL FROM:<a@client.test>\r\n", b"250")
    expect(sock, b"RCPT TO:<u@example.test>\r\n", b"250")
    srv.signal(signal.SIGTERM)
    time.sleep(0.3)
    expect(sock, b"DATA\r\n", b"354")
    sock.sendall(b"Subject: late\r\n\r\nstill delivered\r\n.\r\n")
    rest = b""
    while chunk := sock.recv(4096):  # the server closes after its 421
        rest += chunk
    sock.close()
    lines = rest.splitlines()
    assert lines[0].startswith(b"250") and lines[-1].startswith(b"421 4.3.2"), rest
    assert srv.proc.wait(10) == 0
    assert len(list((srv.maildir / "new").iterdir())) == 1


def test_silent_session_gets_421_after_grace(serve):
    srv = serve(children=2, idle_children=1, grace=1)
    sock, line = connect(srv.port)
    assert line.startswith(b"220")
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    sock.settimeout(5)
    assert sock.recv(512).startswith(b"421 4.3.2")
    waited = time.monotonic() - t0
    assert 0.8 < waited < 3, waited
    sock.close()
    assert srv.proc.wait(10) == 0
    assert not (srv.runtime_dir / "registry").exists()
