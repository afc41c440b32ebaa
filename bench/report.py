"""Turn a bench run (bench/results/latest.json) into the Markdown tables,
docs/BENCHMARKS.md and the PNG plot.  `python3 bench/report.py` re-renders
the doc from the last run without measuring again."""
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MIB = 1024.0
ME = "qsmtp"


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def stat(data, case, server, key):
    """(median, min, max) of one figure over the runs."""
    xs = [r[key] for r in data["results"][case].get(server, []) if r.get(key) is not None]
    if not xs:
        return None, None, None
    return statistics.median(xs), min(xs), max(xs)


def paired_ratio(data, case, peer, key="msgs_s"):
    """Median over rounds of qsmtp / peer, each round's pair measured
    seconds apart (the alternation): steadier than a ratio of medians when
    the machine's load drifts."""
    mine = data["results"].get(case, {}).get(ME, [])
    theirs = data["results"].get(case, {}).get(peer, [])
    rs = [a[key] / b[key] for a, b in zip(mine, theirs) if a.get(key) and b.get(key)]
    return statistics.median(rs) if rs else None


def peers(data):
    return [s for s in data["servers"] if s != ME]


def label(data, s):
    return data["servers"][s]["label"]


def mem_figures(data, server):
    """idle PSS, peak PSS (MiB), procs at peak, PSS per extra process."""
    info = data["servers"][server]
    idle, idle_n = info["idle_pss_kb"] / MIB, info["idle_procs"]
    peak, peak_n = idle, idle_n
    for case in data["results"].values():
        for r in case.get(server, []):
            if r["peak_pss_kb"] / MIB > peak:
                peak, peak_n = r["peak_pss_kb"] / MIB, r["peak_procs"]
    extra = (peak - idle) / (peak_n - idle_n) if peak_n > idle_n else None
    return idle, peak, peak_n, extra


def stored_ok(data, case, server):
    rs = data["results"][case].get(server, [])
    if not rs or not data["servers"][server]["durable"]:
        return None
    return all(r["stored"] == r["expected"] for r in rs)


def fmt(x, nd=0):
    if x is None:
        return "–"
    return ("%%.%df" % nd) % x


def fmt_ratio(r):
    return "%.2f×" % r if r else "–"


def ratio(a, b):
    return "%.2f×" % (a / b) if a and b else "–"


# ---- tables -------------------------------------------------------------------
def markdown_ratios(data):
    """The one table of ratios qsmtp / each peer (higher is better for
    throughput; for CPU and memory, lower is better)."""
    ps = peers(data)
    head = "| case | qsmtp | " + " | ".join("qsmtp / " + label(data, p) for p in ps) + " |"
    lines = [head, "|---" * (len(ps) + 2) + "|"]
    for case, cinfo in data["cases"].items():
        me = stat(data, case, ME, "msgs_s")[0]
        cells = [fmt_ratio(paired_ratio(data, case, p)) for p in ps]
        lines.append("| (%s) %s, msg/s | %s | %s |" % (case, cinfo["title"], fmt(me),
                                                      " | ".join(cells)))
    if "a" in data["results"]:
        me = stat(data, "a", ME, "cpu_ms_msg")[0]
        cells = [fmt_ratio(paired_ratio(data, "a", p, "cpu_ms_msg")) for p in ps]
        lines.append("| server CPU ms/msg in (a) (lower is better) | %s | %s |"
                     % (fmt(me, 2), " | ".join(cells)))
    mine = mem_figures(data, ME)
    for i, what in ((0, "PSS idle, MiB"), (1, "PSS peak, MiB")):
        cells = [ratio(mine[i], mem_figures(data, p)[i]) for p in ps]
        lines.append("| %s (lower is better) | %.1f | %s |" % (what, mine[i], " | ".join(cells)))
    return "\n".join(lines)


def throughput_table(data):
    ss = list(data["servers"])
    lines = ["| case | " + " | ".join(label(data, s) for s in ss) + " |",
             "|---" * (len(ss) + 1) + "|"]
    for case, cinfo in data["cases"].items():
        cells = []
        for s in ss:
            m, lo, hi = stat(data, case, s, "msgs_s")
            ok = stored_ok(data, case, s)
            mark = "" if ok in (None, True) else " **lost mail**"
            cells.append("%s (%s–%s)%s" % (fmt(m), fmt(lo), fmt(hi), mark))
        lines.append("| (%s) `%s` | %s |" % (case, cinfo["argv"], " | ".join(cells)))
    return "\n".join(lines)


def cpu_table(data):
    ss = list(data["servers"])
    lines = ["| case | " + " | ".join(label(data, s) for s in ss) + " |",
             "|---" * (len(ss) + 1) + "|"]
    for case in data["cases"]:
        cells = []
        for s in ss:
            m, lo, hi = stat(data, case, s, "cpu_ms_msg")
            cells.append("%s (%s–%s)" % (fmt(m, 2), fmt(lo, 2), fmt(hi, 2)))
        lines.append("| (%s) | %s |" % (case, " | ".join(cells)))
    return "\n".join(lines)


def memory_table(data):
    lines = ["| server | PSS idle, MiB (procs) | PSS peak, MiB (procs) | PSS per extra process, MiB"
             " | max RSS of one process (a) → (e), MiB | launch → first 220, ms |",
             "|---|---|---|---|---|---|"]
    for s, info in data["servers"].items():
        idle, peak, peak_n, extra = mem_figures(data, s)
        ra = stat(data, "a", s, "peak_rss_kb")[2] if "a" in data["results"] else None
        re_ = stat(data, "e", s, "peak_rss_kb")[2] if "e" in data["results"] else None
        rss = "%s → %s" % (fmt(ra and ra / MIB, 1), fmt(re_ and re_ / MIB, 1))
        lines.append("| %s | %.1f (%d) | %.1f (%d) | %s | %s | %.0f |" % (
            info["label"], idle, info["idle_procs"], peak, peak_n, fmt(extra, 2), rss,
            info["start_s"] * 1000))
    return "\n".join(lines)


def probe_table(data):
    if "d" not in data["results"]:
        return ""
    lines = ["| server | refused (max over runs) | failed | last 220 after, s (median) |"
             " all stored |", "|---|---|---|---|---|"]
    for s in data["servers"]:
        rs = [r for r in data["results"]["d"][s] if "probe" in r]
        if not rs:
            continue
        refused = max(r["probe"]["refused"] for r in rs)
        failed = max(r["probe"]["failed"] for r in rs)
        last = _med([r["probe"]["last_greet_s"] for r in rs])
        ok = stored_ok(data, "d", s)
        lines.append("| %s | %d | %d | %s | %s |" % (label(data, s), refused, failed,
                                                     fmt(last, 2), {None: "n/a (discards)",
                                                                    True: "yes", False: "**no**"}[ok]))
    return "\n".join(lines)


def targets(data):
    """[(target, measured, met)] for the issue's targets that this run covers."""
    out = []
    R = data["results"]

    def m(case, s, key="msgs_s"):
        return stat(data, case, s, key)[0] if case in R and s in R[case] else None

    def check(name, value, need, fmt_v="%.2f×"):
        if value is None:
            return
        out.append((name, fmt_v % value, value >= need if need > 0 else value <= -need))

    def name_of(peer):
        return label(data, peer) if peer in data["servers"] else peer

    def pr(case, peer):
        return paired_ratio(data, case, peer) if peer in data["servers"] else None

    for peer, need in (("qpsmtpd", 2.5), ("postfix", 1.5), ("aiosmtpd", 1.5), ("smtp-sink", 0.2)):
        check("(a) ≥ %.1f× %s" % (need, name_of(peer)), pr("a", peer), need)
    ratios_c = [r for r in (pr("c", p) for p in ("qpsmtpd", "postfix", "aiosmtpd")) if r]
    if ratios_c:
        check("(c) ≥ 1.5× best of qpsmtpd/Postfix/aiosmtpd", min(ratios_c), 1.5)
    for peer, need in (("qpsmtpd", 1.5), ("postfix", 1.0)):
        check("(b) ≥ %.1f× %s" % (need, name_of(peer)), pr("b", peer), need)
    if "d" in R and ME in R["d"]:
        rs = R["d"][ME]
        refused = max(r.get("probe", {}).get("refused", 0) for r in rs)
        ok = stored_ok(data, "d", ME)
        out.append(("(d) none refused, all stored", "%d refused, stored %s" % (
            refused, "all" if ok else "NOT all"), refused == 0 and bool(ok)))
    ratios_e = [r for r in (pr("e", p) for p in ("qpsmtpd", "postfix", "aiosmtpd")) if r]
    if ratios_e:
        check("(e) within 10% of the best peer", min(ratios_e), 0.9)
        ra, re_ = stat(data, "a", ME, "peak_rss_kb")[2], stat(data, "e", ME, "peak_rss_kb")[2]
        if ra and re_:
            out.append(("(e) worker RSS does not grow with size", "%.1f → %.1f MiB" % (
                ra / MIB, re_ / MIB), re_ <= ra * 1.25 + 2 * MIB))
    cpu = m("a", ME, "cpu_ms_msg")
    if cpu is not None:
        out.append(("CPU per message in (a) ≤ 1.0 ms", "%.2f ms" % cpu, cpu <= 1.0))
    idle, peak, _, extra = mem_figures(data, ME)
    out.append(("idle fleet ≤ 30 MiB PSS", "%.1f MiB" % idle, idle <= 30))
    out.append(("peak fleet (15 busy) ≤ 60 MiB PSS", "%.1f MiB" % peak, peak <= 60))
    if extra is not None:
        out.append(("each extra worker < 3 MiB PSS", "%.2f MiB" % extra, extra < 3))
    if data.get("cold_start_s"):
        c = _med(data["cold_start_s"])
        out.append(("cold start (socket activation) < 300 ms", "%.0f ms (%.0f–%.0f)" % (
            c * 1000, min(data["cold_start_s"]) * 1000, max(data["cold_start_s"]) * 1000),
            c < 0.3))
    return out


def targets_table(data):
    lines = ["| target | measured | met |", "|---|---|---|"]
    for name, value, met in targets(data):
        lines.append("| %s | %s | %s |" % (name, value, "yes" if met else "**no**"))
    return "\n".join(lines)


# ---- the doc and the plot ------------------------------------------------------------
def plot(data, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cases, ss = list(data["cases"]), list(data["servers"])
    width = 0.8 / len(ss)
    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    for i, s in enumerate(ss):
        meds, lo, hi = zip(*(stat(data, c, s, "msgs_s") for c in cases))
        xs = [j + (i - (len(ss) - 1) / 2) * width for j in range(len(cases))]
        err = [[m - l for m, l in zip(meds, lo)], [h - m for m, h in zip(meds, hi)]]
        ax.bar(xs, meds, width, yerr=err, capsize=2, label=label(data, s))
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels(["(%s) %s" % (c, data["cases"][c]["title"].replace(", ", "\n", 1))
                        for c in cases], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("messages / s (median, min–max; log scale)")
    ax.set_title("qsmtp and its peers, one run, %s" % data["when"])
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_doc(data, doc_path, plot_path):
    plot(data, plot_path)
    rel = Path(plot_path).name
    analysis = (HERE / "analysis.md").read_text() if (HERE / "analysis.md").exists() else ""
    method = (HERE / "method.md").read_text() if (HERE / "method.md").exists() else ""
    scale = "" if data["scale"] == 1 else (
        " Message counts scaled by %.2f (time)." % data["scale"])
    shrunk = [(i + 1, f[0]) for i, f in enumerate(data.get("round_scales", []))
              if isinstance(f, (list, tuple)) and f[0] < 1]
    if shrunk:
        scale += (" The machine was busy (other jobs), so to stay within the time budget "
                  "later rounds sent fewer messages: " + ", ".join(
                      "round %d × %.2f" % r for r in shrunk) + ".")
    text = f"""# Benchmarks

Generated by `make bench` (bench/run.py; re-render with `python3 bench/report.py`)
on {data['when']}: {data['machine']}. {data['runs']} rounds, servers alternating
round by round; medians with min–max.{scale} The whole run took
{data['duration_s'] / 60:.1f} min. Absolute numbers drift between runs on shared
VMs; the ratios, taken in the same run, are what carries over.

## Ratios qsmtp / peer

Each ratio is the median over the rounds of qsmtp's figure divided by the
peer's in the same round (measured seconds apart).

{markdown_ratios(data)}

## Targets (issue 6)

{targets_table(data)}

![msgs/s per case and server]({rel})

## Messages per second

{throughput_table(data)}

## Server CPU per message, ms (whole process tree, /proc/PID/stat)

{cpu_table(data)}

## Memory (PSS summed over the process tree, /proc/PID/smaps_rollup)

{memory_table(data)}

## (d) 200 connections at once, per connection (bench/greetprobe.py)

{probe_table(data)}

{analysis}
{method}"""
    Path(doc_path).write_text(text)


if __name__ == "__main__":
    src = sys.argv[1] if len(sys.argv) > 1 else str(HERE / "results" / "latest.json")
    d = json.loads(Path(src).read_text())
    print(markdown_ratios(d))
    print()
    print(targets_table(d))
    write_doc(d, HERE.parent / "docs" / "BENCHMARKS.md", HERE.parent / "docs" / "benchmarks.png")
