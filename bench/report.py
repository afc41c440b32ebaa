"""Turn a bench run (bench/results/latest.json) into the Markdown tables,
docs/BENCHMARKS.md and the PNG plot.  `python3 bench/report.py` re-renders
the doc from the last run without measuring again."""
import json
import sys
from pathlib import Path

import targets
from figures import (
    ME,
    MIB,
    STACK_CASE,
    _med,
    all_servers,
    label,
    mem_figures,
    paired_ratio,
    peers,
    stat,
    stored_ok,
)

HERE = Path(__file__).resolve().parent


def fmt(x, nd=0):
    if x is None:
        return "–"
    return f"{x:.{nd}f}"


def fmt_ratio(r):
    return f"{r:.2f}×" if r else "–"


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
        lines.append("| ({}) {}, msg/s | {} | {} |".format(case, cinfo["title"], fmt(me),
                                                      " | ".join(cells)))
    for case in ("a", STACK_CASE):
        if case in data["results"]:
            me = stat(data, case, ME, "cpu_ms_msg")[0]
            cells = [fmt_ratio(paired_ratio(data, case, p, "cpu_ms_msg")) for p in ps]
            lines.append(f"| server CPU ms/msg in ({case}) (lower is better) | {fmt(me, 2)} | "
                         f"{' | '.join(cells)} |")
    if ME in data["servers"]:
        mine = mem_figures(data, ME)
        for i, what in ((0, "PSS idle, MiB"), (1, "PSS peak, MiB")):
            cells = [ratio(mine[i], mem_figures(data, p)[i]) if p in data["servers"] else "–"
                     for p in ps]
            lines.append(f"| {what} (lower is better) | {mine[i]:.1f} | {' | '.join(cells)} |")
    return "\n".join(lines)


def cell(m, lo, hi, nd=0):
    return "–" if m is None else f"{fmt(m, nd)} ({fmt(lo, nd)}–{fmt(hi, nd)})"


def throughput_table(data):
    ss = all_servers(data)
    lines = ["| case | " + " | ".join(label(data, s) for s in ss) + " |",
             "|---" * (len(ss) + 1) + "|"]
    for case, cinfo in data["cases"].items():
        cells = []
        for s in ss:
            m, lo, hi = stat(data, case, s, "msgs_s")
            ok = stored_ok(data, case, s)
            mark = "" if ok in (None, True) else " **lost mail**"
            cells.append(cell(m, lo, hi) + mark)
        lines.append("| ({}) `{}` | {} |".format(case, cinfo["argv"], " | ".join(cells)))
    return "\n".join(lines)


def cpu_table(data):
    ss = all_servers(data)
    lines = ["| case | " + " | ".join(label(data, s) for s in ss) + " |",
             "|---" * (len(ss) + 1) + "|"]
    for case in data["cases"]:
        cells = []
        for s in ss:
            cells.append(cell(*stat(data, case, s, "cpu_ms_msg"), nd=2))
        lines.append("| ({}) | {} |".format(case, " | ".join(cells)))
    return "\n".join(lines)


def memory_table(data):
    lines = ["| server | PSS idle, MiB (procs) | PSS peak, MiB (procs) | PSS per extra process, MiB"
             " | max RSS of one process (a) → (e), MiB | launch → first 220, ms |",
             "|---|---|---|---|---|---|"]
    for s, info in data["servers"].items():
        idle, peak, peak_n, extra = mem_figures(data, s)
        ra = stat(data, "a", s, "peak_rss_kb")[2] if "a" in data["results"] else None
        re_ = stat(data, "e", s, "peak_rss_kb")[2] if "e" in data["results"] else None
        rss = f"{fmt(ra and ra / MIB, 1)} → {fmt(re_ and re_ / MIB, 1)}"
        lines.append("| %s | %.1f (%d) | %.1f (%d) | %s | %s | %.0f |" % (  # noqa: UP031
            info["label"], idle, info["idle_procs"], peak, peak_n, fmt(extra, 2), rss,
            info["start_s"] * 1000))
    return "\n".join(lines)


def stack_table(data):
    """Case (f), the plugin stacks: throughput, CPU and memory per server."""
    if STACK_CASE not in data["results"]:
        return "(case f not run)"
    lines = ["| server | msg/s | server CPU ms/msg | PSS idle, MiB (procs) | PSS peak in (f), MiB"
             " (procs) | all stored |", "|---|---|---|---|---|---|"]
    for s, info in data.get("stack_servers", {}).items():
        idle, peak, peak_n, _ = mem_figures(data, s, "stack_servers", [STACK_CASE])
        ok = stored_ok(data, STACK_CASE, s)
        lines.append("| %s | %s | %s | %.1f (%d) | %.1f (%d) | %s |" % (  # noqa: UP031
            info["label"], cell(*stat(data, STACK_CASE, s, "msgs_s")),
            cell(*stat(data, STACK_CASE, s, "cpu_ms_msg"), nd=2), idle, info["idle_procs"],
            peak, peak_n, {None: "–", True: "yes", False: "**no**"}[ok]))
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
        stored = {None: "n/a (discards)", True: "yes", False: "**no**"}[ok]
        lines.append(f"| {label(data, s)} | {refused} | {failed} | {fmt(last, 2)} | {stored} |")
    return "\n".join(lines)


# ---- the doc and the plot ------------------------------------------------------------
def plot(data, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cases, ss = list(data["cases"]), all_servers(data)
    width = 0.8 / len(ss)
    fig, ax = plt.subplots(figsize=(11, 5), dpi=100)
    for i, s in enumerate(ss):
        cells = [(j, stat(data, c, s, "msgs_s")) for j, c in enumerate(cases)]
        cells = [(j, st) for j, st in cells if st[0] is not None]
        if not cells:
            continue
        xs = [j + (i - (len(ss) - 1) / 2) * width for j, _ in cells]
        meds = [st[0] for _, st in cells]
        err = [[st[0] - st[1] for _, st in cells], [st[2] - st[0] for _, st in cells]]
        ax.bar(xs, meds, width, yerr=err, capsize=2, label=label(data, s))
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels(["({}) {}".format(c, data["cases"][c]["title"].replace(", ", "\n", 1))
                        for c in cases], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("messages / s (median, min–max; log scale)")
    ax.set_title("qsmtp and its peers, one run, {}".format(data["when"]))
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def syscall_table(data):
    """Before (the tree at issue 15's start) and after (this tree), per
    syscall, one session at a time, one 5 KB message per connection."""
    sc = data.get("syscalls")
    if not sc:
        return "(not measured in this run)"
    before, after = sc.get("before") or {}, sc["after"]
    names = sorted(set(before) | set(after),
                   key=lambda n: -max(before.get(n, 0), after.get(n, 0)))
    lines = [f"{sc['messages']} messages traced; before = the tree at `{sc['ref']}` "
             "(issue 15's start), run the same way in the same run.", "",
             "| syscall | before | now |", "|---|---|---|",
             f"| **all** | {fmt(sum(before.values()) if before else None, 1)} "
             f"| {fmt(sum(after.values()), 1)} |"]
    for n in names:
        b, a = before.get(n), after.get(n)
        if max(b or 0, a or 0) >= 0.5:
            lines.append(f"| {n} | {fmt(b, 1)} | {fmt(a, 1)} |")
    return "\n".join(lines)


def write_doc(data, doc_path, plot_path):
    plot(data, plot_path)
    rel = Path(plot_path).name
    analysis = (HERE / "analysis.md").read_text() if (HERE / "analysis.md").exists() else ""
    method = (HERE / "method.md").read_text() if (HERE / "method.md").exists() else ""
    scale = "" if data["scale"] == 1 else (
        " Message counts scaled by {:.2f} (time).".format(data["scale"]))
    for key, what in (("round_scales", "(a)–(e)"), ("stack_round_scales", "(f)")):
        shrunk = [(i + 1, f[0]) for i, f in enumerate(data.get(key, []))
                  if isinstance(f, (list, tuple)) and f[0] < 1]
        if shrunk:
            scale += (f" The machine was busy (other jobs), so to stay within the time budget "
                      f"later rounds of {what} sent fewer messages: " + ", ".join(
                          f"round {n} × {f:.2f}" for n, f in shrunk) + ".")
    warm = "" if "warm" not in data else (
        f" Each server got {data['warm']} messages"
        + (f" ({data['warm_stack']} for the stacks of (f))" if data.get("warm_stack") else "")
        + " before it was measured.")
    text = f"""# Benchmarks

Generated by `make bench` (bench/run.py; re-render with `python3 bench/report.py`)
on {data['when']}: {data['machine']}. {data['runs']} rounds, servers alternating
round by round; medians with min–max.{scale}{warm} The whole run took
{data['duration_s'] / 60:.1f} min. Absolute numbers drift between runs on shared
VMs; the ratios, taken in the same run, are what carries over.

## Ratios qsmtp / peer

Each ratio is the median over the rounds of qsmtp's figure divided by the
peer's in the same round (measured seconds apart).

{markdown_ratios(data)}

## Targets (issues 6 and 15)

{targets.targets_table(data)}

![msgs/s per case and server]({rel})

## Messages per second

{throughput_table(data)}

## Server CPU per message, ms (whole process tree, /proc/PID/stat)

{cpu_table(data)}

## Memory (PSS summed over the process tree, /proc/PID/smaps_rollup)

{memory_table(data)}

## (f) the plugin stack (hosts_allow, helo, dnsbl, rhsbl, spf, dkim, headers, maildir)

{stack_table(data)}

## Syscalls per message in a worker (bench/syscalls.py, strace)

{syscall_table(data)}

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
    print(targets.targets_table(d))
    write_doc(d, HERE.parent / "docs" / "BENCHMARKS.md", HERE.parent / "docs" / "benchmarks.png")
