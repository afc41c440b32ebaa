"""qsmtp vs qpsmtpd-prefork, Postfix smtpd, aiosmtpd and smtp-sink, in one
run, on one machine: `make bench` (bench/run.sh) runs this.

Every server runs as a private instance on its own loopback port for the
whole run. Each round runs every case against every server, the server order
rotating round by round (A B C, B C A, ...) so background noise hits all
alike; the report takes medians over rounds and ratios within this run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases as casemod      # noqa: E402
import coldstart            # noqa: E402
import greetprobe           # noqa: E402
import procstat             # noqa: E402
import report               # noqa: E402
import servers              # noqa: E402

HERE = Path(__file__).resolve().parent
BASE_PORT = 27100


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="rounds (>= 5 for the report)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="message-count factor (e.g. 0.5 when time is short)")
    ap.add_argument("--cases", default="abcde")
    ap.add_argument("--servers", default=",".join(s.name for s in servers.ALL))
    ap.add_argument("--work", default=str(HERE / "work"))
    ap.add_argument("--json", default=str(HERE / "results" / "latest.json"))
    ap.add_argument("--doc", default=str(HERE.parent / "docs" / "BENCHMARKS.md"))
    ap.add_argument("--plot", default=str(HERE.parent / "docs" / "benchmarks.png"))
    ap.add_argument("--no-doc", action="store_true", help="print only")
    ap.add_argument("--budget", type=float, default=10 * 60,
                    help="seconds for the rounds; on a busy machine later rounds "
                         "send fewer messages to stay within it (reported)")
    return ap.parse_args(argv)


def start_all(chosen, work):
    """Start every server; measure launch -> first 220 and idle PSS."""
    started, info = [], {}
    for i, cls in enumerate(chosen):
        srv = cls(BASE_PORT + i, work)
        srv.prepare()
        t = srv.start()
        started.append(srv)
        info[srv.name] = {"label": srv.label, "port": srv.port, "start_s": t,
                          "durable": srv.durable, "pool": srv.pool}
    time.sleep(3.0)                 # pools settle to their idle size
    for srv in started:
        pss, rss, n = procstat.mem(procstat.tree(srv.root_pid()))
        info[srv.name].update(idle_pss_kb=pss, idle_procs=n)
    return started, info


def round_scale(a, rnd, t_start, scales):
    """Message-count factor for this round: 1 unless the rounds so far
    project past the budget; then what fits (never below 0.2)."""
    if rnd == 0 or not scales:
        return 1.0
    last_factor, last_time = scales[-1]
    left = a.budget - (time.monotonic() - t_start)
    need = (a.runs - rnd) * last_time / last_factor      # at full size
    return 1.0 if need <= left else max(0.2, min(1.0, left / need))


def one_run(srv, case):
    """One case against one server: throughput, CPU per message, peak memory,
    what was stored."""
    srv.reset_store()
    busy = procstat.wait_quiet()
    root = srv.root_pid()
    cpu0 = procstat.cpu_seconds(root)
    sampler = procstat.MemSampler(root)
    sampler.start()
    elapsed, rc, err = casemod.run_source(case, srv.port)
    expected = case.messages
    probe = None
    if case.key == "d":
        # 200 connections at once, seen per connection: refused, last 220.
        probe = greetprobe.probe(srv.port, case.sessions)
        expected += probe["sent"]
    stored = srv.settle(expected) if srv.durable else None
    cpu1 = procstat.cpu_seconds(root)
    sampler.stop()
    r = {"msgs_s": case.messages / elapsed, "elapsed_s": elapsed, "rc": rc,
         "cpu_ms_msg": (cpu1 - cpu0) * 1000.0 / expected, "stored": stored,
         "expected": expected if srv.durable else None, "quiet_busy": busy,
         "peak_pss_kb": sampler.peak_pss, "peak_procs": sampler.peak_n,
         "peak_rss_kb": sampler.peak_rss}
    if rc != 0:
        r["error"] = err
    if probe:
        r["probe"] = probe
    return r


def cold_starts(work, n):
    """qsmtp's cold start under systemd-socket-activate, n times."""
    q = servers.Qsmtp(BASE_PORT + 50, work)
    q.name = "qsmtp-coldstart"
    q.work = Path(work) / q.name
    q.prepare()
    out = []
    for _ in range(n):
        with open(q.work / "server.log", "ab") as log:
            dt, proc = coldstart.cold_start(str(servers.QSMTP), q.work / "qsmtp.toml",
                                            q.port, log)
            servers.stop_pid(proc)
        out.append(dt)
        time.sleep(0.3)
    return out


def main(argv=None):
    a = parse_args(argv)
    names = a.servers.split(",")
    chosen = [c for c in servers.ALL if c.name in names]
    cases = [casemod.BY_KEY[k].scaled(a.scale) for k in a.cases]
    t_start = time.monotonic()
    started, info = start_all(chosen, a.work)
    results = {c.key: {s.name: [] for s in started} for c in cases}
    scales = []
    try:
        for rnd in range(a.runs):
            t_round = time.monotonic()
            factor = round_scale(a, rnd, t_start, scales)
            scales.append(factor)
            order = started[rnd % len(started):] + started[:rnd % len(started)]
            for case in cases:
                case = case.scaled(factor) if factor < 1 else case
                for srv in order:
                    r = one_run(srv, case)
                    results[case.key][srv.name].append(r)
                    print("round %d case %s %-10s %8.1f msg/s  cpu %.2f ms/msg  "
                          "stored %s/%s%s" % (rnd + 1, case.key, srv.name, r["msgs_s"],
                                              r["cpu_ms_msg"], r["stored"], r["expected"],
                                              "  ERR " + r["error"][-80:] if "error" in r else ""),
                          flush=True)
            scales[-1] = (factor, time.monotonic() - t_round)
    except KeyboardInterrupt:
        print("interrupted: reporting the rounds done so far", flush=True)
    finally:
        for srv in started:
            srv.stop()
    cold = cold_starts(a.work, max(5, a.runs)) if "qsmtp" in names else []
    data = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(), "runs": a.runs, "scale": a.scale,
            "cases": {c.key: {"title": c.title, "argv": " ".join(c.argv(0)[1:-1]),
                              "messages": c.messages} for c in cases},
            "servers": info, "results": results, "cold_start_s": cold,
            "round_scales": scales,
            "duration_s": time.monotonic() - t_start}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(data, indent=1))
    print(report.markdown_ratios(data))
    if not a.no_doc:
        report.write_doc(data, a.doc, a.plot)
        print("wrote %s and %s" % (a.doc, a.plot))
    print("bench took %.0f s" % data["duration_s"])


def machine():
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    return "%d CPUs (%s), kernel %s, Python %s" % (
        os.cpu_count(), cpu, kernel, sys.version.split()[0])


def median_of(values):
    return statistics.median(values) if values else None


if __name__ == "__main__":
    main()
