"""qsmtp vs qpsmtpd-prefork, Haraka, Postfix smtpd, aiosmtpd and smtp-sink,
in one run, on one machine: `make bench` (bench/run.sh) runs this.

Every server runs as a private instance on its own loopback port; every DNS
query goes to the bench's loopback DNS server (bench/stack.py). Cases
(a)-(e) run against the plain configurations, then case (f) against the
plugin stacks of qsmtp, qpsmtpd-prefork and Haraka. Each server is warmed
with a bounded batch of messages before it is measured. Each round runs
every case against every server, the server order rotating round by round
(A B C, B C A, ...) so background noise hits all alike; the report takes
medians over rounds and ratios within this run.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases as casemod
import coldstart
import greetprobe
import procstat
import report
import servers
import stack
import syscalls
from instance import VENV_PY, stop_pid

HERE = Path(__file__).resolve().parent
BASE_PORT = 27100
STACK_PORT = 27130


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="rounds (>= 5 for the report)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="message-count factor (e.g. 0.5 when time is short)")
    ap.add_argument("--cases", default="abcdef")
    ap.add_argument("--servers", default=",".join(s.name for s in servers.ALL))
    ap.add_argument("--warm", type=int, default=4000,
                    help="messages sent to each server before it is measured")
    ap.add_argument("--warm-stack", type=int, default=1000,
                    help="the same for case (f)'s stacks (slower per message)")
    ap.add_argument("--work", default=str(HERE / "work"))
    ap.add_argument("--json", help="where the run's data goes (default: "
                    "bench/results/latest.json with the doc, else work/last-run.json)")
    ap.add_argument("--doc", default=str(HERE.parent / "docs" / "BENCHMARKS.md"))
    ap.add_argument("--plot", default=str(HERE.parent / "docs" / "benchmarks.png"))
    ap.add_argument("--no-doc", action="store_true", help="print only")
    ap.add_argument("--budget", type=float, default=10 * 60,
                    help="seconds for the rounds of (a)-(e); on a busy machine later "
                         "rounds send fewer messages to stay within it (reported)")
    ap.add_argument("--stack-budget", type=float, default=5 * 60,
                    help="the same for the rounds of (f)")
    ap.add_argument("--smoke", action="store_true",
                    help="a short check that everything runs (BENCH_SMOKE=1): "
                         "2 rounds, 5%% of the messages, 200 warm-up, no doc")
    a = ap.parse_args(argv)
    if a.smoke:
        a.runs, a.scale, a.no_doc = 2, 0.05, True
        a.warm, a.warm_stack, a.budget, a.stack_budget = 200, 100, 240, 120
    if a.json is None:
        a.json = str(HERE / "results" / "latest.json") if not a.no_doc else \
            str(Path(a.work) / "last-run.json")
    return a


def start_dns(work):
    """The loopback DNS server (and case f's signed message), in the
    project venv (dnspython, dkimpy); serves until we close its stdin."""
    d = Path(work) / "stack"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    with open(d / "dns.log", "ab") as log:
        proc = subprocess.Popen([str(VENV_PY), str(HERE / "stack.py"), "--work", str(d)],
                                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    t0 = time.monotonic()
    while not (d / "dns.port").exists():
        if proc.poll() is not None or time.monotonic() - t0 > 60:
            stop_pid(proc)
            raise RuntimeError("bench DNS server did not start; see %s" % (d / "dns.log"))
        time.sleep(0.05)
    time.sleep(0.05)                     # the port file is written in one go
    return proc, stack.Fixture(int((d / "dns.port").read_text()), d / "message.eml")


def stop_dns(proc):
    try:
        proc.stdin.close()
        proc.wait(10)
    except (OSError, subprocess.TimeoutExpired):
        stop_pid(proc)


def start_all(chosen, work, fixture, for_stack):
    """Start every server; measure launch -> first 220 and idle PSS."""
    started, info = [], {}
    base = STACK_PORT if for_stack else BASE_PORT
    for i, cls in enumerate(chosen):
        srv = cls(base + i, work, fixture.dns_port, fixture if for_stack else None)
        started.append(srv)     # stopped below even if its own start fails
        try:
            srv.prepare()
            t = srv.start()
        except BaseException:
            # One server that does not come up must not leave the others
            # (pools of forked workers) running after the bench exits.
            for s in started:
                try:
                    s.stop()
                except OSError as exc:
                    print(f"stopping {s.name}: {exc}", flush=True)
            raise
        info[srv.name] = {"label": srv.label, "port": srv.port, "start_s": t,
                          "durable": srv.durable, "pool": srv.pool}
    time.sleep(3.0)                 # pools settle to their idle size
    for srv in started:
        pss, rss, n = procstat.mem(procstat.tree(srv.root_pid()))
        info[srv.name].update(idle_pss_kb=pss, idle_procs=n)
    return started, info


def warm_up(started, case, n, message):
    """n messages to each server before measuring (Haraka's JIT, pools,
    caches); bounded by smtp-source's timeout; nothing of it is counted."""
    if n <= 0:
        return
    for srv in started:
        elapsed, rc, err = casemod.run_source(case.with_messages(n), srv.port, message)
        tail = "  ERR " + err[-80:] if rc else ""
        print(f"warm-up {srv.name:<10} {n} messages in {elapsed:.1f} s{tail}", flush=True)
        srv.settle(n)
        srv.reset_store()


def round_scale(a, rnd, t_start, scales, budget):
    """Message-count factor for this round: 1 unless the rounds so far
    project past the budget; then what fits (never below 0.2)."""
    if rnd == 0 or not scales:
        return 1.0
    last_factor, last_time = scales[-1]
    left = budget - (time.monotonic() - t_start)
    need = (a.runs - rnd) * last_time / last_factor      # at full size
    return 1.0 if need <= left else max(0.2, min(1.0, left / need))


def one_run(srv, case, message):
    """One case against one server: throughput, CPU per message, peak memory,
    what was stored."""
    srv.reset_store()
    busy = procstat.wait_quiet()
    root = srv.root_pid()
    cpu0 = procstat.cpu_seconds(root)
    sampler = procstat.MemSampler(root)
    sampler.start()
    elapsed, rc, err = casemod.run_source(case, srv.port, message)
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


def run_phase(a, chosen, cases, fixture, results):
    """Start the servers of one phase, warm them, run the rounds, stop
    them; returns their start-up info and the round scales."""
    for_stack = cases[0].stack
    budget = a.stack_budget if for_stack else a.budget
    started, info = start_all(chosen, a.work, fixture, for_stack)
    t_start, scales = time.monotonic(), []
    for c in cases:
        results.setdefault(c.key, {s.name: [] for s in started})
    try:
        warm_up(started, cases[0], a.warm_stack if for_stack else a.warm, fixture.message)
        for rnd in range(a.runs):
            t_round = time.monotonic()
            factor = round_scale(a, rnd, t_start, scales, budget)
            scales.append(factor)
            order = started[rnd % len(started):] + started[:rnd % len(started)]
            for case in cases:
                case = case.scaled(factor) if factor < 1 else case
                for srv in order:
                    r = one_run(srv, case, fixture.message)
                    results[case.key][srv.name].append(r)
                    print("round %d case %s %-10s %8.1f msg/s  cpu %.2f ms/msg  "  # noqa: UP031
                          "stored %s/%s%s" % (rnd + 1, case.key, srv.name, r["msgs_s"],
                                              r["cpu_ms_msg"], r["stored"], r["expected"],
                                              "  ERR " + r["error"][-80:] if "error" in r else ""),
                          flush=True)
            scales[-1] = (factor, time.monotonic() - t_round)
    finally:
        for srv in started:
            srv.stop()
    return info, scales


def cold_starts(work, n, dns_port):
    """qsmtp's cold start under systemd-socket-activate, n times."""
    q = servers.Qsmtp(BASE_PORT + 50, work, dns_port)
    q.name = "qsmtp-coldstart"
    q.work = Path(work) / q.name
    q.prepare()
    out = []
    for _ in range(n):
        with open(q.work / "server.log", "ab") as log:
            dt, proc = coldstart.cold_start(str(servers.QSMTP), q.work / "qsmtp.toml",
                                            q.port, log)
            stop_pid(proc)
        out.append(dt)
        time.sleep(0.3)
    return out


def measure(a, names, fixture):
    """Both phases; returns the run's data (without the doc's extras)."""
    plain = [casemod.BY_KEY[k].scaled(a.scale) for k in a.cases if not casemod.BY_KEY[k].stack]
    stacked = [casemod.BY_KEY[k].scaled(a.scale) for k in a.cases if casemod.BY_KEY[k].stack]
    chosen = [c for c in servers.ALL if c.name in names]
    results, info, stack_info, scales = {}, {}, {}, {}
    try:
        if plain:
            info, scales["plain"] = run_phase(a, chosen, plain, fixture, results)
        if stacked:
            stack_info, scales["stack"] = run_phase(
                a, [c for c in chosen if c.stack_capable], stacked, fixture, results)
    except KeyboardInterrupt:
        print("interrupted: reporting the rounds done so far", flush=True)
    return {"cases": {c.key: {"title": c.title, "argv": " ".join(c.argv(0, "MSG")[1:-1]),
                              "messages": c.messages} for c in plain + stacked},
            "servers": info, "stack_servers": stack_info, "results": results,
            "round_scales": scales.get("plain", []), "stack_round_scales": scales.get("stack", [])}


def main(argv=None):
    a = parse_args(argv)
    names = a.servers.split(",")
    t_start = time.monotonic()
    dns_proc, fixture = start_dns(a.work)
    try:
        data = measure(a, names, fixture)
        cold = cold_starts(a.work, 2 if a.smoke else max(5, a.runs), fixture.dns_port) \
            if "qsmtp" in names and data["servers"] else []
        if "qsmtp" in names and data["servers"]:
            data["syscalls"] = syscalls.before_after(a.work, 50 if a.smoke else 200)
            print("worker syscalls per message: before", syscalls.summary(
                data["syscalls"]["before"] or {}), "now", syscalls.summary(
                data["syscalls"]["after"]), flush=True)
    finally:
        stop_dns(dns_proc)
    data.update({"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "machine": machine(), "runs": a.runs, "scale": a.scale, "warm": a.warm,
                 "warm_stack": a.warm_stack,
                 "smoke": a.smoke, "cold_start_s": cold,
                 "duration_s": time.monotonic() - t_start})
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(data, indent=1))
    print(report.markdown_ratios(data))
    if not a.no_doc:
        report.write_doc(data, a.doc, a.plot)
        print(f"wrote {a.doc}, {a.plot} and {a.json}")
    else:
        print(f"data in {a.json} (the doc and bench/results/latest.json untouched)")
    print("bench took {:.0f} s".format(data["duration_s"]))


def machine():
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} CPUs ({cpu}), kernel {kernel}, Python {sys.version.split()[0]}"


if __name__ == "__main__":
    main()
