"""The last reply survives the close: bytes the client pipelined behind
QUIT are never read, and a close() with unread bytes would send a RST that
makes the client's kernel drop our 221 unread. The server sends FIN first."""

from __future__ import annotations

from helpers.server import connect


def read_to_eof(sock) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)   # ConnectionResetError here: the RST case
        if not chunk:
            return data
        data += chunk


def test_reply_to_quit_arrives_though_bytes_follow_it(serve):
    srv = serve()
    for _ in range(5):   # a few sessions: the same worker and fresh ones
        sock, banner = connect(srv.port)
        assert banner.startswith(b"220")
        sock.sendall(b"EHLO client.test\r\nQUIT\r\n" + b"NOOP\r\n" * 40000)  # past one 64 KiB read
        data = read_to_eof(sock)
        sock.close()
        assert b"\r\n221 " in data, data[-200:]
