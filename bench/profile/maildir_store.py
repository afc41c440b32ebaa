"""CPU per stored message of the two ways queue/maildir can store, with
many writers at once (as a busy fleet stores):

    python3 bench/profile/maildir_store.py [--writers 15] [--messages 150] [--dir D]

`tmp`: create under tmp/, write, fsync, close, rename into new/, fsync new/
(the classic maildir way; each message adds and removes a tmp/ entry).
`unnamed`: open(new/, O_TMPFILE), write, fsync, linkat into new/, fsync
new/ (what queue/maildir does where the file system allows it).
Prints user+sys CPU per message of the writer processes for each way,
alternating, three times. The directory must be on the file system to
judge (default: bench/work/maildir-store, beside the bench's maildirs).
"""
import argparse
import os
import resource
import shutil
import time
from pathlib import Path

DATA = b"x" * 5000


def store(way, base, count):
    new_fd = os.open(base / "new", os.O_RDONLY | os.O_DIRECTORY)
    proc_fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    for n in range(count):
        name = f"{int(time.time())}.P{os.getpid()}Q{n}.bench"
        if way == "tmp":
            fd = os.open(base / "tmp" / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, DATA)
            os.fsync(fd)
            os.close(fd)
            os.rename(base / "tmp" / name, base / "new" / name)
        else:
            fd = os.open(base / "new", os.O_WRONLY | os.O_TMPFILE, 0o600)
            os.write(fd, DATA)
            os.fsync(fd)
            os.link(str(fd), name, src_dir_fd=proc_fd, dst_dir_fd=new_fd)
            os.close(fd)
        os.fsync(new_fd)


def measure(way, base, writers, count):
    """CPU ms per message of `writers` processes storing `count` each."""
    # The directories persist between runs, emptied, as a maildir's do.
    for d in ("tmp", "new"):
        (base / d).mkdir(parents=True, exist_ok=True)
        for entry in os.scandir(base / d):
            os.unlink(entry.path)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    pids = []
    for _ in range(writers):
        pid = os.fork()
        if pid == 0:
            try:
                store(way, base, count)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stored = len(os.listdir(base / "new"))
    assert stored == writers * count, (way, stored)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return cpu * 1000 / stored


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", type=int, default=15)
    ap.add_argument("--messages", type=int, default=150, help="per writer")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=str(Path(__file__).resolve().parents[1] / "work"
                                          / "maildir-store"))
    a = ap.parse_args()
    writers, count = min(a.writers, 64), min(a.messages, 2000)
    base = Path(a.dir)
    for _ in range(a.rounds):
        for way in ("tmp", "unnamed"):
            print(f"{way:<8} {measure(way, base, writers, count):.3f} ms CPU per message "
                  f"({writers} writers)", flush=True)
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
