"""CPU and memory of a server's process tree, from /proc."""
import contextlib
import os
import threading
import time

CLK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    # rest[0] = state (field 3): ppid=1, utime=11, stime=12, cutime=13, cstime=14
    return int(rest[1]), sum(int(x) for x in rest[11:15])


def tree(root):
    """PIDs of root and all its descendants (live, not yet reaped)."""
    children = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(e))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(root):
    """utime+stime+cutime+cstime summed over the tree: work of processes that
    exited and were reaped inside the tree stays counted (in cutime)."""
    total = 0
    for pid in tree(root):
        with contextlib.suppress(OSError, ValueError):
            total += _stat(pid)[1]
    return total / CLK


def mem(pids):
    """(sum of Pss kB, max Rss kB of one process, process count)."""
    pss = maxrss = n = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                data = f.read()
        except OSError:
            continue
        n += 1
        for line in data.splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
            elif line.startswith("Rss:"):
                maxrss = max(maxrss, int(line.split()[1]))
    return pss, maxrss, n


class MemSampler(threading.Thread):
    """Samples the tree's PSS every `every` s; keeps the peak."""

    def __init__(self, root, every=0.25):
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.peak_pss = self.peak_rss = self.peak_n = 0
        self._halt = threading.Event()

    def sample(self):
        pss, rss, n = mem(tree(self.root))
        if pss > self.peak_pss:
            self.peak_pss, self.peak_n = pss, n
        self.peak_rss = max(self.peak_rss, rss)

    def run(self):
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.every)

    def stop(self):
        self._halt.set()
        self.join()


def cpu_busy(window=0.25):
    """Fraction of all CPUs busy over `window` seconds."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return sum(v), idle
    t1, i1 = read()
    time.sleep(window)
    t2, i2 = read()
    dt = t2 - t1
    return 0.0 if dt <= 0 else 1.0 - (i2 - i1) / dt


def wait_quiet(threshold=0.15, max_wait=4.0):
    """Wait until the machine is quiet (or max_wait passed); return the last
    busy fraction seen, so the report can say how quiet it was."""
    t0 = time.monotonic()
    busy = cpu_busy()
    while busy > threshold and time.monotonic() - t0 < max_wait:
        busy = cpu_busy()
    return busy
