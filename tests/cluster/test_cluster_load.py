"""(a) A bounded load through HAProxy lands every message in Postfix
byte-exact, spread over the three hosts, with the clients' own addresses."""

from __future__ import annotations

import re

from helpers.cluster import CLIENTS as CLIENTS_AT
from helpers.cluster import check_delivery, send_load

CLIENTS, PER_CLIENT = 4, 50


def test_load_through_haproxy_lands_byte_exact(cluster, record_property):
    c = cluster()
    result = send_load(c.frontend, clients=CLIENTS, per_client=PER_CLIENT)
    total = CLIENTS * PER_CLIENT
    assert result.accepted == total, [o.failures for o in result.outcomes if not o.accepted]
    delivery = check_delivery(c.postfix, result)
    assert delivery.missing == [] and delivery.altered == []
    assert delivery.duplicates == 0
    # every host took a share, and each saw the real client, not the balancer
    assert all(delivery.received_by[name] > 0 for name in c.names), delivery.received_by
    assert sum(delivery.received_by.values()) == total
    peers = set()  # addresses in the log lines of the clients' sessions
    for host in c.hosts:
        for line in host.log().splitlines():
            if "client.test" in line:
                peers |= set(re.findall(r"127\.0\.0\.\d+", line))
    assert peers == {CLIENTS_AT.format(101 + n) for n in range(CLIENTS)}
    rate = total / result.elapsed
    print(f"\ncluster (a): {total} messages, 3 hosts, {CLIENTS} clients: "
          f"{result.elapsed:.1f}s ({rate:.0f} msg/s), retried {result.retried}, "
          f"per host {delivery.received_by}, lost 0, altered 0, duplicates 0")
    record_property("cluster_a", {"messages": total, "seconds": round(result.elapsed, 2),
                                  "per_host": delivery.received_by})
