"""(b) kill -9 of one host's supervisor in the middle of a load: HAProxy's
SMTP check takes the host out, no message is lost (every client got 250 with
its message in Postfix, or a 4xx/reset and sent it again), and the host
rejoins when it is started again.

The victim is a host with a transaction in flight at the kill: before the
load, three clients stop half-way through DATA (one per host under
leastconn), and they finish only after the kill."""

from __future__ import annotations

import threading
import time

from helpers.cluster import LoadResult, OpenTransaction, check_delivery, send_load

CLIENTS, PER_CLIENT = 4, 60
KILL_AFTER = 60          # accepted messages before the kill
OPEN = 3                 # transactions held open across the kill


def busy_host(c, peers: set[str]) -> int:
    """A host whose registry shows one of `peers` in a session."""
    for index, host in enumerate(c.hosts):
        if {w["peer"] for w in host.snapshot()["workers"]} & peers:
            return index
    raise AssertionError("no host shows the open transactions")


def test_kill_one_host_mid_load_loses_nothing(cluster, record_property):
    c = cluster()
    held = [OpenTransaction(c.frontend, CLIENTS + n, 0) for n in range(OPEN)]
    victim = busy_host(c, {t.peer for t in held})
    name = c.names[victim]
    accepted = threading.Semaphore(0)
    box = {}
    load = threading.Thread(target=lambda: box.update(result=send_load(
        c.frontend, clients=CLIENTS, per_client=PER_CLIENT, progress=accepted)))
    load.start()
    for _ in range(KILL_AFTER):
        assert accepted.acquire(timeout=60), "the load stalled before the kill"
    before = c.forwarded()
    c.kill(victim)
    held_outcomes = [t.finish() for t in held]
    detect = c.lb.wait_status(name, "DOWN", timeout=30)
    load.join(240)
    assert not load.is_alive()
    result = LoadResult(box["result"].outcomes + held_outcomes, box["result"].elapsed)
    total = CLIENTS * PER_CLIENT + OPEN
    assert result.accepted == total, [o.failures for o in result.outcomes if not o.accepted]
    delivery = check_delivery(c.postfix, result)
    assert delivery.missing == [] and delivery.altered == []
    # HAProxy's stot also counts refused tries it redispatched: what the
    # victim really took is what Postfix got through it (plus the held ones)
    assert delivery.received_by[name] <= before[name] + OPEN

    # back: HAProxy's check brings it in again and it takes client sessions
    restarted_at = time.monotonic()
    c.restart(victim)
    c.lb.wait_status(name, "UP", timeout=30)
    rejoin = time.monotonic() - restarted_at
    since = c.forwarded()[name]
    more = send_load(c.frontend, clients=CLIENTS, per_client=6)
    assert more.accepted == CLIENTS * 6
    took = c.forwarded()[name] - since
    assert took > 0, f"{name} took no session after rejoining"
    final = check_delivery(c.postfix, more)
    assert final.missing == [] and final.altered == []

    kinds = sorted({f.split(":")[0] for o in result.outcomes for f in o.failures})
    held_ok = sum(o.accepted and not o.failures for o in held_outcomes)
    print(f"\ncluster (b): {total} messages ({OPEN} held open in DATA across the kill), "
          f"kill -9 of {name}'s supervisor after {KILL_AFTER}: lost 0, altered 0, "
          f"duplicates {delivery.duplicates}; held transactions finished with 250: "
          f"{held_ok}/{OPEN}; retried {result.retried} messages ({result.failed_tries} "
          f"failed tries: {kinds}); HAProxy marked {name} DOWN {detect:.2f}s after the "
          f"kill; load took {result.elapsed:.1f}s; {name} UP {rejoin:.2f}s after its "
          f"restart began, then took {took} of 24; delivered via {delivery.received_by}")
    record_property("cluster_b", {"messages": total, "retried": result.retried,
                                  "failed_tries": result.failed_tries,
                                  "duplicates": delivery.duplicates,
                                  "down_after_s": round(detect, 2),
                                  "up_after_restart_s": round(rejoin, 2)})
