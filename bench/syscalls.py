"""Syscalls a qsmtp worker makes per message, counted by strace: case (a)'s
shape (one 5 KB message per connection) sent one session at a time, the
workers traced (every process of the fleet but the supervisor, retiring
workers' successors included). Run for this tree and, for the before/after
of issue 15, for the tree at BASELINE (a `git worktree` of it, run with the
same venv). A count, not a time: the machine's load does not move it.

    python3 bench/syscalls.py [--ref BASELINE] [--messages 200]
"""
import argparse
import collections
import contextlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import servers
from instance import ROOT, VENV_PY, stop_pid, wait_banner

# The tree just before issue 15's first syscall cut (bc571fa, "a hook run
# with no outer SIGALRM handler costs 4 syscalls, not 6").
BASELINE = "6479dc3"
PORT = 27160
SOURCE = ["/usr/sbin/smtp-source", "-s", "1", "-l", "5000", "-f", "sender@example.com",
          "-t", "rcpt@example.com", "-M", "client.example.com"]


def _fleet(root):
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        with contextlib.suppress(OSError):
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            todo.extend(int(k) for k in kids)
    return out


def count(tree, work, messages):
    """{syscall: calls per message} of the workers of `qsmtp serve` run
    from `tree` (a checkout), for `messages` messages."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "run").mkdir(exist_ok=True)
    qsmtp = servers.Qsmtp(PORT, work.parent, dns_port=None)   # the bench's (a) config
    qsmtp.work = work
    (work / "qsmtp.toml").write_text(qsmtp.config_text(PORT))
    code = f"import sys; sys.path.insert(0, {str(tree)!r}); from qsmtp.cli import main; main()"
    with socket.socket() as probe:       # a 220 from someone else's server proves nothing
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # TIME_WAIT is fine
        probe.bind(("127.0.0.1", PORT))
    with open(work / "server.log", "wb") as log:
        server = subprocess.Popen([str(VENV_PY), "-c", code, "serve", "--config",
                                   str(work / "qsmtp.toml")], stdout=log, stderr=log,
                                  start_new_session=True)
    tracer = None
    try:
        wait_banner(PORT)
        time.sleep(2.0)                       # the idle pool is up
        dest = [f"127.0.0.1:{PORT}"]
        subprocess.run(SOURCE[:1] + ["-m", "20"] + SOURCE[1:] + dest, check=True, timeout=60)
        trace = work / "strace.out"
        pids = _fleet(server.pid)
        tracer = subprocess.Popen(["strace", "-f", "-qq", "-o", str(trace)]
                                  + [a for p in pids for a in ("-p", str(p))],
                                  stderr=subprocess.DEVNULL)
        time.sleep(1.0)                       # attached (strace has no "ready")
        subprocess.run(SOURCE[:1] + ["-m", str(messages)] + SOURCE[1:] + dest,
                       check=True, timeout=300)
        time.sleep(0.3)
    finally:
        if tracer is not None:
            tracer.terminate()
            tracer.wait(20)
        stop_pid(server)
    calls = collections.Counter()
    for line in trace.read_text().splitlines():
        m = re.match(r"(\d+)\s+(\w+)\(", line)
        if m and int(m.group(1)) != server.pid:
            calls[m.group(2)] += 1
    return {name: n / messages for name, n in calls.most_common()}


def worktree(ref, where):
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(where),
                    ref], check=True, capture_output=True)


def drop_worktree(where):
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)],
                   capture_output=True)


def before_after(work, messages, ref=BASELINE):
    """{"ref": ref, "before": {...}, "after": {...}} (before: None when the
    baseline can't be checked out, e.g. a shallow clone)."""
    out = {"ref": ref, "messages": messages, "before": None}
    out["after"] = count(ROOT, Path(work) / "syscalls-now", messages)
    base = Path(tempfile.mkdtemp(prefix="qsmtp-bench-baseline-")) / "tree"
    try:
        worktree(ref, base)
    except subprocess.CalledProcessError as exc:
        print(f"syscalls: no baseline {ref}: {exc.stderr.decode().strip()}", flush=True)
        shutil.rmtree(base.parent, ignore_errors=True)
        return out
    try:
        out["before"] = count(base, Path(work) / "syscalls-before", messages)
    finally:
        drop_worktree(base)
        shutil.rmtree(base.parent, ignore_errors=True)
    return out


def summary(counts):
    total = sum(counts.values())
    top = ", ".join(f"{name} {n:.1f}" for name, n in list(counts.items())[:10])
    return f"{total:.1f} ({top})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default=BASELINE)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--work", default=str(Path(__file__).resolve().parent / "work"))
    a = ap.parse_args()
    r = before_after(a.work, min(a.messages, 2000), a.ref)
    if r["before"]:
        print(f"before ({a.ref}): {summary(r['before'])}")
    print(f"now: {summary(r['after'])}")


if __name__ == "__main__":
    sys.exit(main())
