"""A hypothesis-driven session fuzzer against a LIVE server: random verbs,
parameters, line endings, NULs, 8-bit bytes, giant lines, DATA bodies with
smuggling sequences, pipelined bursts.  Every reply line must be valid SMTP
(3 digits, space or dash, CRLF), the greeting comes first, the server log
shows no traceback and no worker dies.  >= 1,000 sessions in `make test`,
>= 10,000 in the soak."""

from __future__ import annotations

import contextlib
import socket
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.server import alive
from reltools import RELAY_TOML, TALLY, check_replies, log_problems, scale

SESSIONS = scale(1000, 10000)
VERBS = [b"EHLO", b"HELO", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"RSET", b"NOOP", b"QUIT",
         b"VRFY", b"EXPN", b"HELP", b"STARTTLS", b"AUTH", b"AUTH PLAIN", b"BDAT", b"GET",
         b"PROXY TCP4 1.2.3.4 127.0.0.1 1 25", b"XCLIENT", b"ehlo", b"mail from:", b""]
PARAMS = [b"<a@example.test>", b"<>", b"<postmaster>", b"<@a.test:b@example.test>",
          b"<user%foreign.test@example.test>", b"<a@example.test> SIZE=999999999999",
          b"<a@example.test> BODY=8BITMIME SMTPUTF8", b"<a@example.test> FOO=bar",
          b"<\xc3\xbc@b\xc3\xbccher.test>", b"client.test", b"[127.0.0.1]", b"=", b"*",
          b"AGEAYg==", b"LOGIN"]
ENDINGS = [b"\r\n"] * 8 + [b"\n", b"\r", b"", b"\r\r\n", b"\x00\r\n", b"\n\r", b"\r\n\r\n"]
SMUGGLE = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r\n.\x00\r\n",
           b"\r\n..\r\n", b"\r\n.\r\n"]

verb = st.one_of(st.sampled_from(VERBS), st.binary(min_size=1, max_size=12))
param = st.one_of(st.sampled_from(PARAMS), st.binary(max_size=40),
                  st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
                  st.integers(400, 3000).map(lambda n: b"A" * n))
line = st.builds(lambda v, sp, p, e: v + sp + p + e, verb, st.sampled_from([b"", b" "]),
                 param, st.sampled_from(ENDINGS))
body = st.lists(st.one_of(st.binary(max_size=200), st.sampled_from(SMUGGLE),
                          st.sampled_from([b"MAIL FROM:<evil@x.test>\r\n",
                                           b"RCPT TO:<victim@foreign.test>\r\n"])),
                max_size=8).map(b"".join)
data_block = st.builds(lambda b, end: b"DATA\r\n" + b + end, body,
                       st.sampled_from([b"\r\n.\r\n", b"", b".\r\n"]))
burst = st.builds(lambda ln, n: ln * n, line, st.integers(5, 120))
chunk = st.one_of(line, line, line, data_block, burst)
session = st.tuples(st.lists(chunk, min_size=1, max_size=12), st.booleans())


def run_one(port: int, chunks: list[bytes], pipelined: bool) -> bytes:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    received, complete = b"", True
    try:
        payload = [b"".join(chunks)] if pipelined else chunks
        for piece in payload + [b"\r\nQUIT\r\n"]:
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server hung up already (budget, 421): fine
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                complete = False  # unread input made the kernel reset: a cut tail
                break
            if not data:
                break
            received += data
    finally:
        sock.close()
    assert received.startswith((b"220 ", b"220-", b"421 ")), received[:100]
    check_replies(received, complete=complete)
    return received


def test_session_fuzzer(fleet, tls_toml):
    srv = fleet(children=6, idle_children=3, timeout=3, max_from_ip=0,
                extra_toml=RELAY_TOML + tls_toml)
    stats = {"sessions": 0, "reply_lines": 0, "bytes": 0}
    started = time.monotonic()

    @settings(max_examples=SESSIONS, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(session)
    def fuzz(case):
        chunks, pipelined = case
        received = run_one(srv.port, chunks, pipelined)
        stats["sessions"] += 1
        stats["reply_lines"] += received.count(b"\r\n")
        stats["bytes"] += sum(map(len, chunks))

    fuzz()
    elapsed = time.monotonic() - started
    assert srv.proc.poll() is None, "the supervisor died"
    assert all(alive(w["pid"]) for w in srv.snapshot()["workers"])
    assert log_problems(srv.log()) == [], log_problems(srv.log())[:10]
    assert stats["sessions"] >= SESSIONS
    TALLY.add("fuzz.sessions", stats["sessions"])
    TALLY.add("fuzz.reply_lines_checked", stats["reply_lines"])
    TALLY.add("fuzz.bytes_sent", stats["bytes"])
    TALLY.note("fuzz", {"seconds": round(elapsed, 1),
                        "sessions_per_s": round(stats["sessions"] / elapsed, 1)})
    print(f"\nfuzz: {stats['sessions']} sessions, {stats['reply_lines']} reply lines, "
          f"{stats['bytes']} bytes in {elapsed:.1f}s")
