"""max_from_ip: checked in the registry before the greeting, on a fresh
pool too, per address (IPv4-mapped IPv6 counts as the IPv4 address)."""

from __future__ import annotations

import socket

from helpers.server import connect, free_port, read_line, wait_for


def first_lines(socks: list[socket.socket]) -> list[bytes]:
    return [read_line(sock) for sock in socks]


def test_max_from_ip_fresh_pool_and_other_addresses(serve):
    port, port6, mapped = free_port(), free_port("::1"), free_port()
    srv = serve(children=15, idle_children=5, max_from_ip=3,
                listen=[f"127.0.0.1:{port}", f"[::1]:{port6}",
                        f"[::ffff:127.0.0.1]:{mapped}"])
    # 10 at once on a fresh pool: the workers' FIRST connections
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(10)]
    try:
        lines = first_lines(socks)
        served = [line for line in lines if line.startswith(b"220")]
        refused = [line for line in lines if line.startswith(b"421 4.7.0")]
        assert len(served) == 3 and len(refused) == 7, lines
        assert b"Too many connections from 127.0.0.1" in refused[0]
        # the same IP through a dual-stack/v4-mapped listener counts too
        sock, line = connect(mapped)
        sock.close()
        assert line.startswith(b"421 4.7.0"), line
        snap = srv.snapshot()
        assert {w["peer"] for w in snap["workers"] if w["state"] == "busy"} == {"127.0.0.1"}
        # other addresses are unaffected
        other, line = connect(port, source="127.0.0.2")
        socks.append(other)
        assert line.startswith(b"220"), line
        six, line = connect(port6, host="::1")
        socks.append(six)
        assert line.startswith(b"220"), line
        wait_for(lambda: {"127.0.0.2", "::1"} <= {
            w["peer"] for w in srv.snapshot()["workers"]}, 2, what="peers in registry")
    finally:
        for sock in socks:
            sock.close()
    # slots are freed: three new sessions from 127.0.0.1 are welcome again
    wait_for(lambda: not any(w["state"] == "busy" for w in srv.snapshot()["workers"]), 3,
             what="all idle")
    again = [connect(port) for _ in range(3)]
    for sock, line in again:
        sock.close()
        assert line.startswith(b"220"), line
