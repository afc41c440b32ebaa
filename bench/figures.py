"""The figures one run's data gives (bench/results/latest.json, or a
smoke run's work/last-run.json): medians, paired ratios, memory per server.
Shared by report.py (the doc) and targets.py (the targets table)."""
import statistics

MIB = 1024.0
ME = "qsmtp"
STACK_CASE = "f"


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def stat(data, case, server, key):
    """(median, min, max) of one figure over the runs."""
    xs = [r[key] for r in data["results"].get(case, {}).get(server, [])
          if r.get(key) is not None]
    if not xs:
        return None, None, None
    return statistics.median(xs), min(xs), max(xs)


def paired_ratio(data, case, peer, key="msgs_s"):
    """Median over rounds of qsmtp / peer, each round's pair measured
    seconds apart (the alternation): steadier than a ratio of medians when
    the machine's load drifts."""
    mine = data["results"].get(case, {}).get(ME, [])
    theirs = data["results"].get(case, {}).get(peer, [])
    rs = [a[key] / b[key] for a, b in zip(mine, theirs, strict=False) if a.get(key) and b.get(key)]
    return statistics.median(rs) if rs else None


def all_servers(data):
    """Every server of the run, plain phase first (the columns)."""
    return list(dict.fromkeys(list(data["servers"]) + list(data.get("stack_servers", {}))))


def peers(data):
    return [s for s in all_servers(data) if s != ME]


def label(data, s):
    info = data["servers"].get(s) or data.get("stack_servers", {})[s]
    return info["label"]


def plain_cases(data):
    """(a)-(e): the plain configurations (f runs the plugin stacks)."""
    return [c for c in data["cases"] if c != STACK_CASE]


def mem_figures(data, server, servers_key="servers", cases=None):
    """idle PSS, peak PSS (MiB), procs at peak, PSS per extra process, over
    the plain cases (or the given ones, e.g. the stack's)."""
    info = data[servers_key][server]
    idle, idle_n = info["idle_pss_kb"] / MIB, info["idle_procs"]
    peak, peak_n = idle, idle_n
    for key in cases if cases is not None else plain_cases(data):
        for r in data["results"].get(key, {}).get(server, []):
            if r["peak_pss_kb"] / MIB > peak:
                peak, peak_n = r["peak_pss_kb"] / MIB, r["peak_procs"]
    extra = (peak - idle) / (peak_n - idle_n) if peak_n > idle_n else None
    return idle, peak, peak_n, extra


def stored_ok(data, case, server):
    rs = data["results"][case].get(server, [])
    if not rs or not all(r["expected"] is not None for r in rs):
        return None
    return all(r["stored"] == r["expected"] for r in rs)
