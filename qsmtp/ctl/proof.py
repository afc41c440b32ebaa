"""May qsmtpctl signal this pid?  Only when facts the service user cannot
forge say it is this qsmtp's supervisor.

With `--user nobody` the registry segment, the runtime dir and the pid file
all belong to nobody, so the supervisor pid in the segment's header is
nobody's to write: a forged pid would have root's `qsmtpctl stop` kill any
process.  What nobody cannot change:
- the segment's creator pid (`cpid` in /proc/sysvipc/shm), kept by the
  kernel: the supervisor creates the segment itself, before any drop;
- that the process has this very segment attached (/proc/PID/maps names it
  `/SYSV<key>` with the segment id as inode): the live supervisor always
  has, a process that merely reuses a dead supervisor's pid has not (root
  without CAP_SYS_PTRACE may not read the maps: then the process must have
  started before the segment was made);
- systemd's MainPID of the qsmtp unit the process runs in.
The header pid must agree with all of them; otherwise we refuse.  A caller
that is not root can only signal its own processes anyway (the kernel
sees to that), and after the drop it may not read the supervisor's maps:
for it the creator pid is the proof.
"""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

from qsmtp import sysvipc

if TYPE_CHECKING:
    from qsmtp.registry import Registry


class NotProven(Exception):
    """The pid is not provably our supervisor; the message says why."""


def verified_supervisor(registry: Registry, pid: int) -> int:
    """`pid` (from the registry header) if it is provably the supervisor that
    created `registry`'s segment and still has it attached, else NotProven."""
    shm_id = registry.shm.id
    row = sysvipc.row("shm", shm_id)
    if row is None:
        raise NotProven(f"the registry segment {shm_id} is gone")
    if int(row["cpid"]) != pid:
        raise NotProven(f"the registry names pid {pid}, but its segment was created by "
                        f"pid {row['cpid']}: not signalling a pid the registry's owner "
                        "could have written")
    try:
        cmdline = _read(f"/proc/{pid}/cmdline")
        attached = os.geteuid() != 0 or _has_attached(pid, int(row["key"]), shm_id)
    except PermissionError:
        # root without CAP_SYS_PTRACE (a container's default) may not read
        # another user's maps: then the process must at least be older than
        # the segment (a reused pid is younger).
        attached = _started_before(pid, int(row["ctime"]))
    except OSError:
        if _systemd_control_process_of(pid):
            return pid  # the segment's creator, named by systemd itself
        raise NotProven(f"supervisor pid {pid} is gone") from None
    if b"qsmtp" not in cmdline:
        raise NotProven(f"pid {pid} is not a qsmtp process")
    if not attached:
        raise NotProven(f"pid {pid} does not have the registry attached (a reused pid)")
    main_pid = _systemd_main_pid(pid)
    if main_pid and main_pid != pid:
        raise NotProven(f"pid {pid} is not its unit's MainPID ({main_pid})")
    return pid


def _systemd_control_process_of(pid: int) -> bool:
    """systemd runs ExecReload= (`qsmtpctl reload`) as the service user, and
    under ProtectProc=invisible that process cannot see the main process in
    /proc; systemd tells it the pid in $MAINPID. Trusted only for a caller
    that is not root: the kernel lets it signal its own processes only, so a
    forged variable gains nothing."""
    return os.geteuid() != 0 and os.environ.get("MAINPID") == str(pid)


def _has_attached(pid: int, key: int, shm_id: int) -> bool:
    name = f"/SYSV{key & 0xFFFFFFFF:08x}".encode()
    for line in _read(f"/proc/{pid}/maps").splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[4] == str(shm_id).encode() and fields[5] == name:
            return True
    return False


def _started_before(pid: int, ctime: int) -> bool:
    """The process started no later than the segment's last change (whole
    seconds in /proc/sysvipc/shm, hence the one second of slack)."""
    try:
        ticks = int(_read(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in _read("/proc/stat").splitlines()
                    if line.startswith(b"btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return False
    return boot + ticks / os.sysconf("SC_CLK_TCK") <= ctime + 1


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _systemd_main_pid(pid: int) -> int | None:
    """The MainPID of the qsmtp .service `pid` runs in; None outside one
    (a supervisor started by hand inside another service, a CI runner say,
    is not that service's main process) or when systemctl cannot tell: then
    the other facts decide."""
    try:
        cgroups = _read(f"/proc/{pid}/cgroup").decode().splitlines()
    except OSError:
        return None
    units = [leaf for leaf in (line.rsplit("/", 1)[-1] for line in cgroups)
             if leaf.endswith(".service") and "qsmtp" in leaf]
    if not units:
        return None
    try:
        out = subprocess.run(["systemctl", "show", "--property=MainPID", "--value", units[0]],
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    return int(value) if out.returncode == 0 and value.isdigit() and value != "0" else None
