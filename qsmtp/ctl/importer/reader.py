"""Read a qpsmtpd config directory as qpsmtpd itself does (Qpsmtpd.pm
`_config_from_file`), keeping where every line came from.

Each config is a file named after it in the directory.  Lines are trimmed;
blank lines and lines starting with `#` are dropped (there are no trailing
comments: `#` after text is part of the value).  `$include PATH` is replaced
by the lines of PATH (relative paths are resolved in the config directory),
or, when PATH is a directory, of its regular files not starting with `.`, in
name order; inclusions nest.  qpsmtpd gives up on a file whose inclusions
form a cycle; here that is an `InputError`, as is anything that keeps a file
from being read faithfully: unreadable, not UTF-8 text (binary junk), larger
than `MAX_FILE_BYTES`, or nested deeper than `MAX_DEPTH`.  Memory stays
bounded: no file is read past its limit.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

MAX_FILE_BYTES = 4 * 1024 * 1024  # config files are small; badmailfrom lists reach ~1 MB
MAX_TOTAL_BYTES = 32 * 1024 * 1024  # all files read for one import
MAX_DEPTH = 16  # nested $include levels


class InputError(Exception):
    """A config file that cannot be read as qpsmtpd would: `path[:line]: reason`."""

    def __init__(self, path: str, reason: str, line: int = 0):
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {reason}")
        self.path, self.line, self.reason = path, line, reason


@dataclass(frozen=True)
class Line:
    """One effective config line and where it was written."""

    text: str
    path: str
    lineno: int

    @property
    def origin(self) -> str:
        return f"{self.path}:{self.lineno}"


class QpsmtpdDir:
    """A qpsmtpd config directory; `lines(name)` reads (and caches) one config."""

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)
        try:
            mode = os.stat(self.directory).st_mode
        except OSError as exc:
            raise InputError(directory, exc.strerror or str(exc)) from None
        if not stat.S_ISDIR(mode):
            raise InputError(directory, "not a directory")
        if not os.access(self.directory, os.R_OK | os.X_OK):
            raise InputError(directory, "permission denied")
        self._cache: dict[str, list[Line]] = {}
        self._budget = MAX_TOTAL_BYTES
        self.files_read: list[str] = []  # every file read, includes too

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def exists(self, name: str) -> bool:
        return os.path.lexists(self.path(name))

    def lines(self, name: str) -> list[Line]:
        """The config `name`'s effective lines; [] when the file is absent."""
        if name not in self._cache:
            path = self.path(name)
            self._cache[name] = self._read(path, ()) if os.path.lexists(path) else []
        return self._cache[name]

    def texts(self, name: str) -> list[str]:
        return [line.text for line in self.lines(name)]

    def first(self, name: str) -> Line | None:
        """qpsmtpd's scalar config(): the first effective line."""
        found = self.lines(name)
        return found[0] if found else None

    def _read(self, path: str, chain: tuple[str, ...]) -> list[Line]:
        real = os.path.realpath(path)
        if real in chain:
            loop = " -> ".join(list(chain[chain.index(real):]) + [real])
            raise InputError(path, f"circular $include ({loop})")
        if len(chain) > MAX_DEPTH:
            raise InputError(path, f"$include nested deeper than {MAX_DEPTH} levels")
        out: list[Line] = []
        for lineno, text in enumerate(self._text(path).splitlines(), 1):
            text = text.strip()
            if not text or text.startswith("#"):
                continue
            target = _include_target(text)
            if target is None:
                out.append(Line(text, path, lineno))
                continue
            for included in self._expand(target, path, lineno):
                out += self._read(included, chain + (real,))
        return out

    def _expand(self, target: str, path: str, lineno: int) -> list[str]:
        """An $include target -> the files it names (qpsmtpd's expand_inclusion_)."""
        if not target.startswith("/"):
            target = os.path.join(self.directory, target)
        if os.path.isdir(target):
            try:
                names = sorted(os.listdir(target))
            except OSError as exc:
                raise InputError(path, f"$include {target}: {exc.strerror}", lineno) from None
            return [os.path.join(target, n) for n in names
                    if not n.startswith(".") and os.path.isfile(os.path.join(target, n))]
        if not os.path.exists(target):
            # qpsmtpd skips a missing inclusion silently; say so instead.
            raise InputError(path, f"$include {target}: no such file", lineno)
        return [target]

    def _text(self, path: str) -> str:
        try:
            # O_NONBLOCK: opening a FIFO must not hang; it is refused below.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise InputError(path, "not a regular file")
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise InputError(path, exc.strerror or str(exc)) from None
        if len(data) > MAX_FILE_BYTES:
            raise InputError(path, f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: "
                                   "not a qpsmtpd config file")
        self._budget -= len(data)
        if self._budget < 0:
            raise InputError(path, f"the config files together exceed "
                                   f"{MAX_TOTAL_BYTES // (1024 * 1024)} MiB")
        self.files_read.append(path)
        return _decode(path, data)


def _include_target(text: str) -> str | None:
    """`$include PATH` -> PATH (qpsmtpd: /^\\s*\\$include\\s+(\\S+)\\s*$/)."""
    if not text.startswith("$include"):
        return None
    parts = text.split()
    if parts[0] != "$include" or len(parts) != 2:
        return None
    return parts[1]


def _decode(path: str, data: bytes) -> str:
    if b"\0" in data:
        raise InputError(path, "binary data (NUL bytes), not a text config file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(path, f"not UTF-8 text (byte {exc.start})", line) from None
