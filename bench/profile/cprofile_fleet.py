"""CPU profile of the real fleet's workers under smtp-source load:

    .venv/bin/python bench/profile/cprofile_fleet.py [--case a] [--top 40]

Runs `qsmtp serve` in this process with Worker.run wrapped in cProfile (CPU
clock: waiting for clients or the disk does not count); every worker dumps
its stats when it exits (lifetime reached, or the stop at the end), and the
merged stats are printed. The supervisor is not profiled (bench/run.py's
per-tree CPU figures include it).
"""
import argparse
import cProfile
import glob
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))   # the repository: qsmtp
sys.path.insert(0, str(HERE.parent))       # bench/: cases, servers


def serve_profiled(config, outdir):
    """Child process: patch Worker.run, then be `qsmtp serve`."""
    from qsmtp import cli, worker

    original = worker.Worker.run

    def run(self):
        prof = cProfile.Profile(time.process_time)
        prof.enable()
        try:
            return original(self)
        finally:
            prof.disable()
            prof.dump_stats(os.path.join(outdir, f"worker-{os.getpid()}.prof"))

    worker.Worker.run = run
    sys.argv = ["qsmtp", "serve", "--config", config]
    cli.main()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="a")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        return serve_profiled(*a.serve)
    import cases
    import instance
    import servers
    work = Path(tempfile.mkdtemp(prefix="qsmtp-fleetprof-"))
    srv = servers.Qsmtp(27197, work, dns_port=None)   # plain qsmtp asks no DNS
    srv.prepare()
    outdir = work / "prof"
    outdir.mkdir()
    with open(work / "log", "wb") as log:
        proc = subprocess.Popen([sys.executable, __file__, "--serve",
                                 str(srv.work / "qsmtp.toml"), str(outdir)],
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        instance.wait_banner(srv.port)
        time.sleep(1)
        case = cases.BY_KEY[a.case]
        t, rc, err = cases.run_source(case, srv.port)
        print(f"case {a.case}: {case.messages / t:.0f} msg/s rc={rc} {err}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    files = glob.glob(str(outdir / "*.prof"))
    st = pstats.Stats(*files)
    st.sort_stats("tottime").print_stats(a.top)
    st.sort_stats("cumulative").print_stats(a.top)


if __name__ == "__main__":
    main()
