"""auth/file -- SMTP AUTH against a password file of scrypt hashes.

    [[plugins]]
    name = "auth/file"            # or "auth_file"
    path = "/etc/qsmtp/users"

The file holds one `user:hash` per line (`#` comments allowed), the hash
being `$scrypt$ln=15,r=8,p=1$<salt>$<key>` with a random salt per user and
the scrypt parameters inside (hashlib.scrypt; no extra dependency).  Edit
it with `qsmtpctl user add|passwd|del NAME` (locks, writes a temp file,
fsyncs, renames; mode 0640): give the service user's group read access.

Checks PLAIN and LOGIN (the clear-text password is hashed with the user's
salt and compared in constant time).  A wrong password is DENY (535); a
user not in the file is DECLINED, so a later backend (e.g.
auth/checkpassword) may know it - with no backend deciding, 535 as well.
Unknown users cost the same scrypt work as known ones (no timing oracle).

The file is read at load (a malformed file stops the start with exit 78)
and re-read whenever its inode, size or mtime changes, so `qsmtpctl user`
takes effect without a reload.  If a changed file is malformed, the last
good contents stay in use and an error is logged; if it cannot be read at
all, AUTH answers 454 4.7.0 (try later).

Options:
- `path` (required): the password file.

AUTH itself (TLS-only unless `[auth] plaintext_services`, rate limits,
delays) is configured in `[auth]`; see the settings reference.

qpsmtpd mapping: `auth/auth_flat_file` (clear-text `user:password` file) ->
`auth/file`; re-enter each password with `qsmtpctl user add` (the old
file's clear-text passwords are not read).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from qsmtp.plugins.api import Option, PluginError
from qsmtp.plugins.builtin._auth import (
    DEFAULT_LN,
    AuthBackend,
    PasswdFormatError,
    ScryptHash,
    TempFail,
    hash_password,
    parse_passwd,
)

if TYPE_CHECKING:
    from qsmtp.smtp.state import Session



class AuthFile(AuthBackend):
    """Password file of scrypt hashes; re-read when it changes."""

    options = {"path": Option(str, "", "password file (user:$scrypt$... lines)")}
    # Checked for unknown users (see _load); made at the first load.
    dummy: ScryptHash | None = None

    def setup(self) -> None:
        if not self.opts.path:
            raise PluginError(self.name, "path", "required (the password file)")
        self.users: dict[str, ScryptHash] = {}
        self.stamp: tuple[int, int, int, int] | None = None
        try:
            self._load(os.stat(self.opts.path))
        except OSError as exc:
            raise PluginError(self.name, "path", f"cannot read {self.opts.path}: "
                              f"{exc.strerror or exc}") from None
        except PasswdFormatError as exc:
            raise PluginError(self.name, "path", str(exc)) from None

    def _load(self, st: os.stat_result) -> None:
        with open(self.opts.path, encoding="utf-8", errors="strict") as handle:
            text = handle.read()
        _lines, self.users = parse_passwd(text, self.opts.path)
        self.stamp = _stamp(st)
        # Checked for unknown users, so that they cost the same work as the
        # costliest known one.
        ln = max((h.ln for h in self.users.values()), default=DEFAULT_LN)
        if self.dummy is None or self.dummy.ln != ln:
            self.dummy = ScryptHash.parse(hash_password(os.urandom(12).hex(), ln))

    def _refresh(self) -> None:
        try:
            st = os.stat(self.opts.path)
            if _stamp(st) == self.stamp:
                return
            self._load(st)
            self.log.info("re-read %s: %d users", self.opts.path, len(self.users))
        except PasswdFormatError as exc:
            self.log.error("%s; keeping the previous contents", exc)
            self.stamp = _stamp(st)  # don't re-parse the same bad file every time
        except (OSError, UnicodeDecodeError) as exc:
            raise TempFail(f"cannot read {self.opts.path}: {exc}") from None

    def check(self, session: Session, user: str, password: str) -> bool | None:
        self._refresh()
        stored = self.users.get(user)
        if stored is None:
            if self.dummy is not None:  # always, once setup() has loaded the file
                self.dummy.matches(password)
            return None
        return stored.matches(password)


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
