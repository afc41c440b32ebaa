"""auth/checkpassword -- SMTP AUTH through a qmail checkpassword program.

    [[plugins]]
    name = "auth/checkpassword"   # or "auth_checkpassword"
    program = "/usr/local/bin/checkpassword"
    args = ["/bin/true"]

For PLAIN and LOGIN, runs `program args...` with file descriptor 3 carrying
`user\\0password\\0timestamp\\0` (the qmail checkpassword interface, as used
by qpsmtpd's auth_checkpassword, vpopmail, Dovecot's checkpassword, ...).
Exit 0: good (checkpassword then runs `args`, by convention `/bin/true`);
exit 1: bad credentials, 535; any other exit (111 is "temporary problem"),
a crash or running past `timeout`: 454 4.7.0 and a log line.  The program
gets stdin/stdout on /dev/null, the environment TCPREMOTEIP, TCPREMOTEPORT,
TCPLOCALIP, TCPLOCALPORT, TCPREMOTEHOST and PATH, and its own session
(the whole group is killed on timeout).  It runs as the worker's user.

Options:
- `program` (required): absolute path of the checkpassword program.
- `args` (list, default `["/bin/true"]`): what it runs on success.
- `timeout` (float seconds, default 10; below `server.hook_timeout`).

qpsmtpd mapping: `auth/auth_checkpassword checkpw /path true /bin/true` ->
`program = "/path"`, `args = ["/bin/true"]`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING

from qsmtp.plugins.api import Option, PluginError
from qsmtp.plugins.builtin._auth import AuthBackend, TempFail

if TYPE_CHECKING:
    from qsmtp.smtp.state import Session


# The child gets the credentials on fd 3: the shell moves its stdin (our
# pipe) there and reopens stdin on /dev/null before exec - no preexec_fn.
_ON_FD3 = 'exec "$@" 3<&0 </dev/null'
GOOD, BAD = 0, 1


class AuthCheckpassword(AuthBackend):
    """qmail checkpassword protocol (fd 3: user NUL password NUL timestamp NUL)."""

    options = {
        "program": Option(str, "", "checkpassword program (absolute path)"),
        "args": Option(list, ["/bin/true"], "program it runs on success"),
        "timeout": Option(float, 10.0, "seconds before the check counts as failed",
                          bounds=(0.1, 3600)),
    }

    def setup(self) -> None:
        program = self.opts.program
        if not program or not os.path.isabs(program):
            raise PluginError(self.name, "program", "required, an absolute path")
        if not os.access(program, os.X_OK):
            raise PluginError(self.name, "program", f"{program} is not executable")
        if not all(isinstance(a, str) for a in self.opts.args):
            raise PluginError(self.name, "args", "must be a list of strings")
        if not 0 < self.opts.timeout < self.config.server.hook_timeout:
            raise PluginError(self.name, "timeout", "must be above 0 and below "
                              f"server.hook_timeout ({self.config.server.hook_timeout})")

    def check(self, session: Session, user: str, password: str) -> bool | None:
        payload = b"%s\0%s\0%d\0" % (user.encode("utf-8"), password.encode("utf-8"),
                                     int(time.time()))
        code = self._run(session, payload)
        if code == GOOD:
            return True
        if code == BAD:
            return False
        raise TempFail(f"{self.opts.program} exited with {code}")

    def _run(self, session: Session, payload: bytes) -> int:
        env = dict(getattr(session, "env", {}), PATH=os.environ.get("PATH", "/usr/bin:/bin"))
        read_end, write_end = os.pipe()
        try:
            # The payload (< 64 KiB, the pipe buffer) is written before the
            # child starts, so writing never blocks.
            os.write(write_end, payload)
            os.close(write_end)
            write_end = -1
            proc = subprocess.Popen(["/bin/sh", "-c", _ON_FD3, "checkpassword",
                                     self.opts.program, *self.opts.args],
                                    stdin=read_end, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=env,
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            raise TempFail(f"cannot run {self.opts.program}: {exc.strerror or exc}") from None
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        try:
            return proc.wait(self.opts.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise TempFail(f"{self.opts.program} ran past {self.opts.timeout:g}s") from None
        except BaseException:
            _kill_group(proc)  # the hook budget (SIGALRM) or the session ending
            raise


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
