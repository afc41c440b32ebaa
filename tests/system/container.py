"""A booted systemd (PID 1) in systemd-nspawn on a debootstrapped tree.

Kept safe for the host: each boot has its own cgroup,
the launcher dies with us (pdeathsig, `unshare --kill-child`), private tmpfs
on /tmp and /run/systemd/nspawn on the host side, a hard `timeout`, and
everything the container writes goes to RAM (--volatile=overlay).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time

PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
CGROUP_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd")

# $0 = cgroup name, $1 = rootfs, $2 = host dir shown read-only at /opt/qsmtp
LAUNCHER = r"""
for root in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do
    echo 0 >"$root/$0/cgroup.procs"
done
mount -t tmpfs tmpfs /tmp
mkdir -p /run/systemd/nspawn
mount -t tmpfs tmpfs /run/systemd/nspawn
exec systemd-nspawn --quiet --boot -D "$1" --machine="$0" --volatile=overlay \
    --private-network --private-users=identity --register=no --keep-unit \
    --link-journal=no --resolv-conf=off --timezone=off \
    --bind-ro="$2":/opt/qsmtp --console=read-only
"""


class ContainerError(AssertionError):
    """Boot or command failure, with the console tail for the reader."""


class Container:
    def __init__(self, rootfs: str, share: str, console_log: str, lifetime: int = 300):
        self.rootfs, self.share, self.console_log = rootfs, share, console_log
        self.lifetime = lifetime
        self.cgroup = f"qsmtp-systest-{os.getpid()}-{int(time.time())}"
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None  # the container's PID 1, as the host sees it

    # ---- life cycle ----------------------------------------------------------
    def boot(self, timeout: float = 60.0) -> None:
        for root in CGROUP_ROOTS:
            os.mkdir(f"{root}/{self.cgroup}")
        env = {"PATH": PATH[5:], "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        with open(self.console_log, "wb") as console:
            self.proc = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", "--", "timeout", str(self.lifetime),
                 "setpriv", "--pdeathsig", "KILL", "--",
                 "unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount",
                 "--propagation", "private", "--mount-proc", "--",
                 "sh", "-ec", LAUNCHER, self.cgroup, self.rootfs, self.share],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                env=env, start_new_session=True)
        self.pid = self._find_init(timeout)
        deadline = time.monotonic() + timeout
        state = "offline"
        # "offline" until PID 1 is systemd and has its private bus socket.
        while state in ("offline", "") and time.monotonic() < deadline:
            time.sleep(0.1)
            state = self.run("systemctl is-system-running --wait", check=False,
                             timeout=max(1.0, deadline - time.monotonic())).stdout.strip()
        if state not in ("running", "degraded"):
            raise ContainerError(f"container systemd did not come up (state {state!r})"
                                 + self.console_tail())

    def _find_init(self, timeout: float) -> int:
        """Poll for the host pid whose NSpid ends in 1 inside our cgroup."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited with {self.proc.returncode}"
                                     + self.console_tail())
            for root in CGROUP_ROOTS:
                for pid in _pids_in_cgroup(f"{root}/{self.cgroup}"):
                    if len(_nspid(pid)) == 3 and _nspid(pid)[-1] == 1:
                        return pid
            time.sleep(0.05)
        raise ContainerError(f"no container init after {timeout:g} s" + self.console_tail())

    def poweroff(self, timeout: float = 20.0) -> None:
        """Clean shutdown (SIGRTMIN+4 to its systemd), then the hard way."""
        if self.proc is None:
            return
        if self.pid and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGRTMIN + 4)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # our launcher's own group
            self.proc.wait(10)
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        for root in CGROUP_ROOTS:
            _rmdir_tree(f"{root}/{self.cgroup}")


    # ---- commands --------------------------------------------------------------
    def enter(self) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "--user", "--preserve-credentials",
                "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w", "--", "env", "-i", PATH,
                "LANG=C.UTF-8"]

    def run(self, command: str, *, check: bool = True, timeout: float = 60.0,
            input: str | None = None) -> subprocess.CompletedProcess:
        """`sh -c command` inside the container (all its namespaces)."""
        try:
            result = subprocess.run(self.enter() + ["sh", "-c", command], input=input,
                                    capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"in container, timed out after {timeout:g} s: "
                                 f"{command}\n{exc.stdout or ''}{exc.stderr or ''}") from None
        if check and result.returncode != 0:
            raise ContainerError(f"in container, exit {result.returncode}: {command}\n"
                                 f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}")
        return result

    def wait_output(self, command: str, expect: str, timeout: float = 20.0,
                    unit: str = "qsmtp.service") -> str:
        """Poll `command` until its stripped stdout is `expect`; on timeout
        fail with the last output and the unit's journal."""
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            out = self.run(command, check=False).stdout.strip()
            if out == expect:
                return out
            time.sleep(0.2)
        raise AssertionError(f"`{command}` gave {out!r}, not {expect!r} after {timeout:g} s\n"
                             + self.journal(unit))

    def popen_in_net(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """A host program in the container's network namespace only (it
        reaches the container's 127.0.0.1)."""
        return subprocess.Popen(["nsenter", "--target", str(self.pid), "--net", "--"] + argv,
                                **kwargs)

    def console_tail(self, lines: int = 25) -> str:
        try:
            with open(self.console_log, errors="replace") as handle:
                tail = handle.read().splitlines()[-lines:]
        except OSError:
            return ""
        return "\n--- container console (last lines)\n" + "\n".join(tail)

    def journal(self, unit: str, lines: int = 40) -> str:
        return self.run(f"journalctl --no-pager -n {lines} -u {shlex.quote(unit)}",
                        check=False).stdout


def remove_stale_cgroups() -> None:
    """Cgroups of earlier runs whose pytest was SIGKILLed (pdeathsig took the
    container down, nobody removed its empty cgroup directories)."""
    for root in CGROUP_ROOTS:
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for name in names:
            parts = name.split("-")
            if (name.startswith("qsmtp-systest-") and len(parts) == 4 and parts[2].isdigit()
                    and not os.path.exists(f"/proc/{parts[2]}")):
                _rmdir_tree(f"{root}/{name}", tries=1)


def _rmdir_tree(top: str, tries: int = 50) -> None:
    """rmdir bottom-up (cgroup dirs hold only kernel files); retried while the
    kernel finishes reaping the container's last processes."""
    for _ in range(tries):
        if not os.path.isdir(top):
            break
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if os.path.isdir(top):
            time.sleep(0.1)


def _pids_in_cgroup(path: str) -> list[int]:
    pids = []
    for dirpath, _dirs, files in os.walk(path):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as handle:
                    pids += [int(line) for line in handle if line.strip()]
            except OSError:
                pass
    return pids


def _nspid(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except OSError:
        pass
    return []
