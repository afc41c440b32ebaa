"""(b) kill -9 of one host's supervisor in the middle of a load: HAProxy's
SMTP check takes the host out, no message is lost (every client got 250 with
its message in Postfix, or a 4xx/reset and sent again), and the host rejoins
when it is started again."""

from __future__ import annotations

import threading
import time

from helpers.cluster import check_delivery, send_load

CLIENTS, PER_CLIENT = 4, 60
KILL_AFTER = 60          # accepted messages before the kill
VICTIM = 0               # mx1


def test_kill_one_host_mid_load_loses_nothing(cluster, record_property):
    c = cluster()
    accepted = threading.Semaphore(0)
    box = {}
    load = threading.Thread(target=lambda: box.update(result=send_load(
        c.frontend, clients=CLIENTS, per_client=PER_CLIENT, progress=accepted)))
    load.start()
    for _ in range(KILL_AFTER):
        assert accepted.acquire(timeout=60), "the load stalled before the kill"
    before = c.forwarded()
    killed_at = time.monotonic()
    c.kill(VICTIM)
    detect = c.lb.wait_status("mx1", "DOWN", timeout=30)
    load.join(240)
    assert not load.is_alive()
    result = box["result"]
    total = CLIENTS * PER_CLIENT
    assert result.accepted == total, [o.failures for o in result.outcomes if not o.accepted]
    delivery = check_delivery(c.postfix, result)
    assert delivery.missing == [] and delivery.altered == []
    # HAProxy's stot also counts the refused tries it redispatched: what mx1
    # really took is what Postfix got through it
    assert delivery.received_by["mx1"] <= before["mx1"] + 2  # at most those in flight
    assert delivery.received_by["mx2"] + delivery.received_by["mx3"] >= total - before["mx1"] - 2

    # back: HAProxy's check brings it in again and it takes client sessions
    restarted_at = time.monotonic()
    c.restart(VICTIM)
    c.lb.wait_status("mx1", "UP", timeout=30)
    rejoin = time.monotonic() - restarted_at
    since = c.forwarded()["mx1"]
    more = send_load(c.frontend, clients=CLIENTS, per_client=6)
    assert more.accepted == CLIENTS * 6
    assert c.forwarded()["mx1"] > since, "mx1 took no session after rejoining"
    final = check_delivery(c.postfix, more)
    assert final.missing == [] and final.altered == []

    print(f"\ncluster (b): {total} messages, kill -9 of mx1's supervisor after "
          f"{KILL_AFTER}: lost 0, altered 0, retried {result.retried} messages "
          f"({result.failed_tries} failed tries: {sorted({f.split(':')[0] for o in result.outcomes for f in o.failures})}), "
          f"duplicates {delivery.duplicates}; HAProxy marked mx1 DOWN "
          f"{detect:.2f}s after the kill; load took {result.elapsed:.1f}s; "
          f"mx1 UP {rejoin:.2f}s after its restart began; "
          f"delivered via {delivery.received_by} (mx1 before the kill: {before['mx1']} "
          f"sessions); after rejoining mx1 took {c.forwarded()['mx1'] - since} of 24")
    record_property("cluster_b", {"messages": total, "retried": result.retried,
                                  "failed_tries": result.failed_tries,
                                  "duplicates": delivery.duplicates,
                                  "down_after_s": round(detect, 2),
                                  "up_after_restart_s": round(rejoin, 2)})
    assert killed_at < restarted_at
