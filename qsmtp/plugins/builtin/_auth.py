"""Shared by the AUTH backends and `qsmtpctl user`: scrypt password hashes,
the password file format, and the base class of backend plugins.

Hash string (one per user, all parameters inside, so they can be raised
later without breaking old entries):

    $scrypt$ln=15,r=8,p=1$<salt, base64>$<key, base64>

`ln` is log2 of scrypt's N.  Salt 16 random bytes, key 32 bytes.  ln=15,
r=8 takes 32 MiB and tens of milliseconds per check.

Password file: one `user:hash` per line; blank lines and lines starting
with `#` are kept as they are.  A user name is printable UTF-8 without
`:`, whitespace or control characters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qsmtp.plugins.api import DECLINED, DENY, DENYSOFT, OK, HookReturn, Plugin

if TYPE_CHECKING:
    from qsmtp.smtp.state import Session


DEFAULT_LN, DEFAULT_R, DEFAULT_P = 15, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
_HASH = re.compile(r"\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})"
                   r"\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)\Z")
_BAD_NAME = re.compile(r"[:\s\x00-\x1f\x7f]")


class HashError(ValueError):
    """A stored hash string that cannot be used."""


@dataclass(frozen=True)
class ScryptHash:
    ln: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, text: str) -> ScryptHash:
        match = _HASH.match(text)
        if not match:
            raise HashError("not a $scrypt$ln=..,r=..,p=..$salt$key hash")
        ln, r, p = (int(g) for g in match.groups()[:3])
        if not (1 <= ln <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
            raise HashError(f"scrypt parameters out of range (ln={ln}, r={r}, p={p})")
        try:
            salt, key = (base64.b64decode(g, validate=True) for g in match.groups()[3:])
        except ValueError:
            raise HashError("bad base64 in hash") from None
        if len(salt) < 8 or len(key) < 16:
            raise HashError("salt or key too short")
        return cls(ln, r, p, salt, key)

    def derive(self, password: str) -> bytes:
        return _scrypt(password.encode("utf-8"), self.salt, self.ln, self.r, self.p,
                       len(self.key))

    def matches(self, password: str) -> bool:
        return hmac.compare_digest(self.derive(password), self.key)  # constant time

    def __str__(self) -> str:
        salt, key = (base64.b64encode(raw).decode("ascii") for raw in (self.salt, self.key))
        return f"$scrypt$ln={self.ln},r={self.r},p={self.p}${salt}${key}"


def _scrypt(password: bytes, salt: bytes, ln: int, r: int, p: int, size: int) -> bytes:
    n = 1 << ln
    maxmem = 128 * r * (n + p + 2) + (1 << 20)  # what scrypt needs, plus slack
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=size)


def hash_password(password: str, ln: int = DEFAULT_LN, r: int = DEFAULT_R,
                  p: int = DEFAULT_P) -> str:
    salt = os.urandom(SALT_BYTES)
    key = _scrypt(password.encode("utf-8"), salt, ln, r, p, KEY_BYTES)
    return str(ScryptHash(ln, r, p, salt, key))


def check_user_name(name: str) -> str | None:
    """None when `name` may be stored, else the reason."""
    if not name:
        return "empty user name"
    if _BAD_NAME.search(name):
        return "user name must not contain ':', whitespace or control characters"
    if len(name.encode("utf-8")) > 255:
        return "user name longer than 255 bytes"
    return None


class PasswdFormatError(ValueError):
    def __init__(self, path: str, line: int, reason: str):
        super().__init__(f"{path}:{line}: {reason}")


def parse_passwd(text: str, path: str) -> tuple[list[str], dict[str, ScryptHash]]:
    """-> (lines as read, {user: hash}).  Raises PasswdFormatError."""
    lines = text.splitlines()
    users: dict[str, ScryptHash] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        reason = check_user_name(user) if sep else "expected user:hash"
        if reason:
            raise PasswdFormatError(path, number, reason)
        if user in users:
            raise PasswdFormatError(path, number, f"user {user!r} listed twice")
        try:
            users[user] = ScryptHash.parse(stored.strip())
        except HashError as exc:
            raise PasswdFormatError(path, number, f"user {user!r}: {exc}") from None
    return lines, users


class TempFail(Exception):
    """The backend cannot decide now (454 4.7.0)."""


class AuthBackend(Plugin):
    """Base of the `auth_*` plugins: `check(session, user, password)` says
    True (good), False (bad password) or None (not a user of this backend:
    the next backend may know it; when none does, the answer is 535)."""

    MECHANISMS = ("PLAIN", "LOGIN")

    def hook_auth(self, session: Session, mechanism: str, user: str, secret: str) -> HookReturn:
        if mechanism not in self.MECHANISMS:
            return DECLINED
        try:
            verdict = self.check(session, user, secret)
        except TempFail as exc:
            self.log.warning("session %s: cannot check credentials: %s",
                             getattr(session, "id", "-"), exc)
            return DENYSOFT, "4.7.0 Temporary authentication failure"
        if verdict is None:
            return DECLINED
        return OK if verdict else DENY

    def check(self, session: Session, user: str, password: str) -> bool | None:
        raise NotImplementedError
