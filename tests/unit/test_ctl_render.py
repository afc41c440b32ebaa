"""qsmtpctl renderers: snapshot dict -> human text, JSON, Prometheus."""

from __future__ import annotations

import json
import re

import pytest

from qsmtp.ctl import render

NOW = 1_700_000_000.0


def worker(pid, state="idle", peer=None, service=None, since=NOW - 5, sessions=0,
           generation=3, slot=0):
    return {"slot": slot, "pid": pid, "generation": generation, "state": state,
            "peer": peer, "service": service, "since": since, "heartbeat": since,
            "started": NOW - 100, "sessions": sessions}


def snapshot(workers, children=15, sessions_total=18342, **sup):
    supervisor = {"pid": 4242, "generation": 3, "started": NOW - 7384, "state": "running",
                  "sessions_total": sessions_total, "lock_recoveries": 0,
                  "reload_status": "ok", "reload_reason": "", "reload_time": NOW - 60,
                  "throttled_until": None}
    supervisor.update(sup)
    return {"magic_ok": True, "version": 1, "consistent": True, "supervisor": supervisor,
            "pool": {"max": children, "slots": children, "idle_children": 5,
                     "max_from_ip": 10},
            "workers": workers}


SNAP = snapshot([
    worker(101, "busy", "192.0.2.7", "smtp", NOW - 12, 40),
    worker(102, "busy", "192.0.2.7", "submission", NOW - 3, 2),
    worker(103, "busy", "2001:db8::1", "smtp", NOW - 200, 7),
    worker(104, "idle", sessions=9),
    worker(0, "starting"),  # reserved slot, forked a moment ago
])


def test_json_contract():
    doc = json.loads(render.dumps(SNAP, NOW))
    sup = doc["supervisor"]
    assert (sup["pid"], sup["generation"], sup["sessions_total"]) == (4242, 3, 18342)
    assert sup["uptime"] == 7384 and sup["started"] == NOW - 7384
    assert {k: doc["pool"][k] for k in ("max", "workers", "busy", "idle")} == \
        {"max": 15, "workers": 4, "busy": 3, "idle": 1}
    assert doc["pool"]["starting"] == 1
    assert [w["pid"] for w in doc["workers"]] == [101, 102, 103, 104]
    first = doc["workers"][0]
    assert {k: first[k] for k in ("pid", "state", "peer", "service", "sessions",
                                  "generation")} == \
        {"pid": 101, "state": "busy", "peer": "192.0.2.7", "service": "smtp",
         "sessions": 40, "generation": 3}
    assert first["since"] == NOW - 12 and first["for"] == 12
    assert doc["workers"][3]["peer"] is None and doc["workers"][3]["state"] == "idle"
    assert doc["peers"] == {"192.0.2.7": 2, "2001:db8::1": 1}
    assert list(doc["peers"]) == ["192.0.2.7", "2001:db8::1"]  # most first


def test_human_screen():
    text = render.human(SNAP, NOW)
    lines = text.splitlines()
    assert lines[0] == "qsmtp supervisor pid 4242 · running · generation 3 · up 2h03m"
    assert lines[1] == "4/15 workers · 3 busy · 1 idle · 18342 sessions"
    assert re.search(r"^PID\s+STATE\s+PEER\s+SERVICE\s+FOR\s+SESSIONS\s+GEN$", text, re.M)
    assert re.search(r"^103\s+busy\s+2001:db8::1\s+smtp\s+3m20s\s+7\s+3$", text, re.M)
    assert re.search(r"^104\s+idle\s+-\s+-\s+5s\s+9\s+3$", text, re.M)
    assert "top clients: 192.0.2.7 (2), 2001:db8::1 (1)" in text
    assert "WARNING" not in text


def test_human_warns_at_max():
    full = snapshot([worker(n, "busy", f"192.0.2.{n}", "smtp") for n in range(1, 4)],
                    children=3)
    assert "WARNING: pool at max (3 workers, all busy)" in render.human(full, NOW)
    some_idle = snapshot([worker(1, "busy", "192.0.2.1"), worker(2), worker(3)], children=3)
    assert "note: pool at max (3 workers)" in render.human(some_idle, NOW)


def test_human_reload_failed_throttled_inconsistent():
    snap = snapshot([], reload_status="failed",
                    reload_reason="/etc/qsmtp/qsmtp.toml: server.children: must be at least 1",
                    throttled_until=NOW + 3.2)
    snap["consistent"] = False
    text = render.human(snap, NOW)
    assert "last reload FAILED: /etc/qsmtp/qsmtp.toml: server.children" in text
    assert "throttled: workers dying at start, next spawn in 3.2 s" in text
    assert "read without its lock" in text
    assert "(no workers)" in text


@pytest.mark.parametrize("seconds, text", [
    (None, "-"), (0, "0s"), (59.9, "59s"), (60, "1m00s"), (192, "3m12s"),
    (3600, "1h00m"), (7384, "2h03m"), (86400 * 4 + 3600 * 7, "4d07h"), (-3, "0s"),
])
def test_duration(seconds, text):
    assert render.duration(seconds) == text


def test_prometheus_exposition():
    text = render.prometheus(SNAP, NOW)
    assert text.endswith("\n")
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) qsmtp_\w+ .+$", line), line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    assert samples["qsmtp_workers"] == 4
    assert samples["qsmtp_workers_busy"] == 3
    assert samples["qsmtp_workers_idle"] == 1
    assert samples["qsmtp_workers_max"] == 15
    assert samples["qsmtp_sessions_total"] == 18342
    assert samples["qsmtp_supervisor_start_time_seconds"] == NOW - 7384
    assert samples["qsmtp_generation"] == 3
    assert samples['qsmtp_peer_sessions{peer="192.0.2.7"}'] == 2
    assert "# TYPE qsmtp_sessions_total counter" in text
    # every sample has HELP and TYPE before it
    for name in {n.split("{")[0] for n in samples}:
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text


def test_pool_max_falls_back_to_slots():
    snap = snapshot([], children=0)
    snap["pool"]["slots"] = 8
    assert render.pool_counts(snap)["max"] == 8


def test_cluster_view_lines():
    from qsmtp.ctl.cluster import lines

    assert lines(None) == []  # no Redis: nothing added
    down = lines({"store": "redis://10.0.0.5:6379/0", "error": "refused", "peers": {}})
    assert down[-1] == "cluster view (redis://10.0.0.5:6379/0): unavailable: refused"
    up = lines({"store": "redis://r/0", "error": None, "peers": {
        "192.0.2.7": {"here": 1, "sessions": 3, "connections": 9, "recipients": 20}}})
    assert up[-1] == ("  192.0.2.7: 1 here, 3 on all hosts, 9 connections and 20 "
                      "recipients in the rate windows")


# ---- the whole reload reason, config-invalid, nothing running ------------------------
WHOLE = "/etc/qsmtp/qsmtp.toml: plugins.queue/maildir.queue.path: cannot create maildir " \
        "/var/spool/elsewhere/maildir: Permission denied"


def test_whole_reload_reason_comes_from_the_published_file():
    snap = snapshot([worker(101)], reload_status="failed", reload_reason=WHOLE[:48])
    snap["published"] = {"config": "/etc/qsmtp/qsmtp.toml",
                         "reload": {"status": "failed", "reason": WHOLE, "time": NOW - 60}}
    doc = render.as_json(snap, NOW)
    assert doc["supervisor"]["reload"]["reason"] == WHOLE
    assert doc["config"] == "/etc/qsmtp/qsmtp.toml" and doc["running"] is True
    text = render.human(snap, NOW)
    assert f"last reload FAILED: {WHOLE} (generation 3 keeps serving)" in text
    assert "config /etc/qsmtp/qsmtp.toml" in text
    # a published outcome of another status (an older reload) is not used
    snap["published"]["reload"]["status"] = "ok"
    assert render.reload_reason(snap) == WHOLE[:48]


def test_last_good_reload_is_shown():
    assert "last reload ok, 1m00s ago" in render.human(snapshot([worker(101)]), NOW)


def test_config_invalid_state():
    snap = snapshot([], state="config-invalid", generation=0, reload_status="none",
                    reload_time=0.0)
    snap["published"] = {"config_error": "/q.toml: server.children: must be between 1 and 4096"}
    text = render.human(snap, NOW)
    assert "CONFIG INVALID: /q.toml: server.children: must be between 1 and 4096;" in text
    assert "0/0 workers" in text
    assert "qsmtp_config_valid 0" in render.prometheus(snap, NOW)
    assert "qsmtp_config_valid 1" in render.prometheus(SNAP, NOW)


def test_nothing_running():
    doc = json.loads(render.dumps_not_running("qsmtp is not running (no registry at /r)",
                                              None))
    assert doc == {"running": False, "reason": "qsmtp is not running (no registry at /r)",
                   "config": None}
    assert render.prometheus_down().splitlines()[-1] == "qsmtp_up 0"


def test_heartbeat_age_is_on_the_monotonic_clock_of_the_read():
    # Heartbeats are CLOCK_MONOTONIC; the age is against the snapshot's own
    # monotonic reading, whatever the wall clock says.
    beating = dict(worker(101), heartbeat=500.0)
    doc = render.as_json(dict(snapshot([beating]), monotonic=502.5), NOW)
    assert doc["workers"][0]["heartbeat_age"] == 2.5
    assert render.as_json(snapshot([beating]), NOW)["workers"][0]["heartbeat_age"] is None
