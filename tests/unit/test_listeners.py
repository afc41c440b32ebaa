"""listeners.py: self-bound sockets (v4, v6, dual stack, v4-mapped) and
inherited ones (systemd's fds keep their names)."""

from __future__ import annotations

import socket

import pytest

from qsmtp import listeners, systemd


def free_port(host="127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def test_bind_v4_v6_with_default_port():
    port = free_port()
    port6 = free_port("::1")
    socks = listeners.bind_all([f"127.0.0.1:{port}", f"[::1]:{port6}"], 25)
    try:
        assert [ln.service for ln in socks] == ["smtp", "smtp"]
        assert socks[0].address == f"127.0.0.1:{port}"
        assert socks[1].address == f"[::1]:{port6}"
        assert socks[0].sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert socks[1].sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        assert not any(ln.inherited for ln in socks)
    finally:
        listeners.close_all(socks)
    socks = listeners.bind_all(["127.0.0.1"], port)  # no port: --port's value
    try:
        assert socks[0].address == f"127.0.0.1:{port}"
    finally:
        listeners.close_all(socks)


def test_v4_mapped_listener_is_dual_stack_and_sees_mapped_peers():
    port = free_port()
    socks = listeners.bind_all([f"[::ffff:127.0.0.1]:{port}"], 25)
    try:
        sock = socks[0].sock
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            conn, peer = sock.accept()
            conn.close()
        assert peer[0] == "::ffff:127.0.0.1"
    finally:
        listeners.close_all(socks)


def test_bind_failure_closes_what_was_opened():
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        other = free_port()
        with pytest.raises(listeners.ListenError, match=f"cannot listen on 127.0.0.1:{port}"):
            listeners.bind_all([f"127.0.0.1:{other}", f"127.0.0.1:{port}"], 25)
        # the first one was closed again: its port is free
        listeners.close_all(listeners.bind_all([f"127.0.0.1:{other}"], 25))


def test_inherited_sockets_keep_their_names(monkeypatch):
    good = socket.socket()
    good.bind(("127.0.0.1", 0))
    good.listen()
    not_listening = socket.socket()
    fds = {good.fileno(): "submission", not_listening.fileno(): "smtp"}
    monkeypatch.setattr(systemd, "listen_fds", lambda: dict(fds))
    try:
        socks = listeners.open_listeners(["127.0.0.1:1"], 25)
        assert [(ln.fileno(), ln.service, ln.inherited) for ln in socks] == [
            (good.fileno(), "submission", True)]
        assert not_listening.fileno() != -1  # skipped, left alone
        for ln in socks:
            ln.sock.detach()  # the fds belong to `good` in this test
    finally:
        good.close()
        not_listening.close()


def test_systemd_unnamed_fd_is_smtp(monkeypatch):
    from systemd import daemon

    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setattr(daemon, "listen_fds_with_names",
                        lambda unset_environment=True: {3: "unknown", 4: "submission"})
    assert systemd.listen_fds() == {3: "smtp", 4: "submission"}
    monkeypatch.delenv("LISTEN_FDS")
    assert systemd.listen_fds() == {}
