"""The issues' targets (6 and 15) checked against one run's data: each as
(target, measured, met), for the targets table of docs/BENCHMARKS.md."""
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
        return label(data, peer) if peer in all_servers(data) else peer

    def pr(case, peer):
        return paired_ratio(data, case, peer) if peer in all_servers(data) else None

    for peer, need in (("qpsmtpd", 2.5), ("postfix", 1.5), ("aiosmtpd", 1.5), ("smtp-sink", 0.2)):
        check(f"(a) ≥ {need:.1f}× {name_of(peer)}", pr("a", peer), need)
    ratios_c = [r for r in (pr("c", p) for p in ("qpsmtpd", "postfix", "aiosmtpd")) if r]
    if ratios_c:
        check("(c) ≥ 1.5× best of qpsmtpd/Postfix/aiosmtpd", min(ratios_c), 1.5)
    for peer, need in (("qpsmtpd", 1.5), ("postfix", 1.0)):
        check(f"(b) ≥ {need:.1f}× {name_of(peer)}", pr("b", peer), need)
    if "d" in R and ME in R["d"]:
        rs = R["d"][ME]
        refused = max(r.get("probe", {}).get("refused", 0) for r in rs)
        ok = stored_ok(data, "d", ME)
        out.append(("(d) none refused, all stored",
                    f"{refused} refused, stored {'all' if ok else 'NOT all'}",
                    refused == 0 and bool(ok)))
    ratios_e = [r for r in (pr("e", p) for p in ("qpsmtpd", "postfix", "aiosmtpd")) if r]
    if ratios_e:
        check("(e) within 10% of the best peer", min(ratios_e), 0.9)
        ra, re_ = stat(data, "a", ME, "peak_rss_kb")[2], stat(data, "e", ME, "peak_rss_kb")[2]
        if ra and re_:
            out.append(("(e) worker RSS does not grow with size",
                        f"{ra / MIB:.1f} → {re_ / MIB:.1f} MiB",
                        re_ <= ra * 1.25 + 2 * MIB))
    for peer, need in (("qpsmtpd", 2.0), ("haraka", 1.2)):
        check(f"(f) ≥ {need:.1f}× {name_of(peer)}", pr(STACK_CASE, peer), need)
    cpu = m("a", ME, "cpu_ms_msg")
    if cpu is not None:
        out.append(("CPU per message in (a) ≤ 1.0 ms", f"{cpu:.2f} ms", cpu <= 1.0))
        theirs = {p: m("a", p, "cpu_ms_msg") for p in peers(data)
                  if p != "smtp-sink" and m("a", p, "cpu_ms_msg") is not None}
        if theirs:
            best = min(theirs, key=theirs.get)
            out.append(("(a) less CPU per message than every storing peer",
                        f"{cpu:.2f} ms vs {name_of(best)} {theirs[best]:.2f} ms",
                        cpu < theirs[best]))
    if ME not in data["servers"]:
        return out
    idle, peak, _, extra = mem_figures(data, ME)
    out.append(("idle fleet ≤ 30 MiB PSS", f"{idle:.1f} MiB", idle <= 30))
    out.append(("peak fleet (15 busy) ≤ 60 MiB PSS", f"{peak:.1f} MiB", peak <= 60))
    if extra is not None:
        out.append(("each extra worker < 3 MiB PSS", f"{extra:.2f} MiB", extra < 3))
    if data.get("cold_start_s"):
        c = _med(data["cold_start_s"])
        out.append(("cold start (socket activation) < 300 ms", "{:.0f} ms ({:.0f}–{:.0f})".format(
            c * 1000, min(data["cold_start_s"]) * 1000, max(data["cold_start_s"]) * 1000),
            c < 0.3))
    return out


def targets_table(data):
    lines = ["| target | measured | met |", "|---|---|---|"]
    for name, value, met in targets(data):
        lines.append("| {} | {} | {} |".format(name, value, "yes" if met else "**no**"))
    return "\n".join(lines)
