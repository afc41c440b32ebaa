"""Socket activation exactly as systemd does it, via systemd-socket-activate,
with a NOTIFY_SOCKET this test binds: READY=1 after the first workers,
STATUS= following the pool, STOPPING=1 at stop, fd names as services."""

from __future__ import annotations

import signal
import time

from helpers.server import connect, wait_for


def test_socket_activation_notify_and_service_name(serve):
    srv = serve(start=False, socket_activate=["smtp"], children=15, idle_children=5,
                max_from_ip=0)
    srv.start()
    t0 = time.monotonic()
    # systemd-socket-activate execs qsmtp on the first connection
    first = srv.activate()
    held = [first]
    try:
        ready = wait_for(lambda: srv.notify.first("READY=1"), 10, what="READY=1")
        print(f"\nstart -> READY=1 in {ready[0] - t0:.3f}s")
        assert first.recv(512).startswith(b"220")
        assert srv.snapshot()["supervisor"]["pid"] == srv.pid
        # READY=1 only once the first idle_children workers accept
        assert "5 workers" in ready[1] or "6 workers" in ready[1], ready[1]
        before = len(srv.notify.messages)
        t1 = time.monotonic()
        for _ in range(14):
            sock, line = connect(srv.port)
            assert line.startswith(b"220")
            held.append(sock)
        wait_for(lambda: sum(w["state"] == "busy" for w in srv.snapshot()["workers"]) == 15,
                 3, what="15 busy")
        print(f"5 -> 15 busy workers in {time.monotonic() - t1:.3f}s")
        status = wait_for(lambda: [t for t in srv.notify.texts()[before:]
                                   if "STATUS=15 workers: 15 busy" in t], 2,
                          what="STATUS with 15 busy")
        assert "max 15" in status[-1]
        services = {w["service"] for w in srv.snapshot()["workers"] if w["state"] == "busy"}
        assert services == {"smtp"}
    finally:
        for sock in held:
            sock.close()
    srv.signal(signal.SIGTERM)
    assert srv.proc.wait(15) == 0
    wait_for(lambda: srv.notify.first("STOPPING=1"), 2, what="STOPPING=1")


def test_two_named_sockets_reload_and_watchdog(serve, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # passed on with -E below
    srv = serve(start=False, socket_activate=["smtp", "submission"], children=4,
                idle_children=2)
    srv.extra_activate_env = ["WATCHDOG_USEC"]
    srv.start()
    a = srv.activate()
    try:
        wait_for(lambda: srv.notify.first("READY=1"), 10, what="READY=1")
        assert a.recv(512).startswith(b"220")
        b, line = connect(srv.ports[1])
        assert line.startswith(b"220")
        services = wait_for(lambda: (lambda s: s if s == {"smtp", "submission"} else None)(
            {w["service"] for w in srv.snapshot()["workers"] if w["state"] == "busy"}), 2,
            what="both services busy")
        assert services == {"smtp", "submission"}
        b.close()
    finally:
        a.close()
    assert "systemd" in srv.log()  # the listeners line says where the sockets came from
    wait_for(lambda: srv.notify.first("WATCHDOG=1"), 2, what="WATCHDOG=1")
    before = len(srv.notify.messages)
    srv.signal(signal.SIGHUP)
    wait_for(lambda: any(t.startswith("READY=1") for t in srv.notify.texts()[before:]), 5,
             what="READY=1 after the reload")
    texts = srv.notify.texts()[before:]
    reloading = [i for i, t in enumerate(texts) if t.startswith("RELOADING=1")]
    ready = [i for i, t in enumerate(texts) if t.startswith("READY=1")]
    assert reloading and ready and reloading[0] < ready[0], texts
    usec = int(texts[reloading[0]].split("MONOTONIC_USEC=")[1].split()[0])
    assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 10
