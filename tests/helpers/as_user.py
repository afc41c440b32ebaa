"""Run Python, or qsmtpctl, as another user (setpriv) from any checkout.

A process that switched to nobody or daemon must read the interpreter, the
venv's packages and the qsmtp package.  A checkout inside a mode-0700
directory (root's home on Debian) hides all three from them, so such
processes run from a world-readable copy of the package and the venv's
site-packages, made once per test run in the temp directory, with the
system interpreter the venv was made from.  The code is the same; only
where it is read from differs.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import qsmtp

# Test tools the dropped-privilege processes never import: not copied.
_SKIP = ("pip", "setuptools", "wheel", "pkg_resources", "_distutils_hack", "hypothesis",
         "_hypothesis*", "pytest", "_pytest", "pytest_*", "py.py", "__editable__*",
         "distutils-precedence.pth")


def setpriv(user: str, group: str, groups: str | None = None) -> list[str]:
    """The command prefix that runs the rest as user:group (supplementary
    groups: `groups`, else none)."""
    extra = ["--groups", groups] if groups else ["--clear-groups"]
    return ["setpriv", "--reuid", user, "--regid", group, *extra]


@contextlib.contextmanager
def shared_dir(prefix: str) -> Iterator[Path]:
    """A fresh temp directory another user can reach (mode 0755; pytest's
    tmp dirs are root-only, 0700), removed afterwards."""
    where = Path(tempfile.mkdtemp(prefix=prefix))
    where.chmod(0o755)
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


@functools.cache
def _tree() -> Path:
    top = Path(tempfile.mkdtemp(prefix="qsmtp-as-user-"))
    atexit.register(shutil.rmtree, top, True)
    lib = top / "lib"
    paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    for site in paths:
        shutil.copytree(site, lib, ignore=shutil.ignore_patterns(*_SKIP), dirs_exist_ok=True)
    package = Path(qsmtp.__file__).parent
    shutil.copytree(package, lib / "qsmtp", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    # Readable whatever the umask or the modes in the checkout were.
    for root, _dirs, files in os.walk(top):
        os.chmod(root, 0o755)
        for name in files:
            path = os.path.join(root, name)
            os.chmod(path, 0o755 if os.stat(path).st_mode & 0o100 else 0o644)
    return lib


def interpreter() -> str:
    """The system interpreter behind the venv: a venv's bin/python is a
    symlink inside the checkout, which the other user may not traverse."""
    return os.path.realpath(sys.executable)


def python() -> list[str]:
    """argv prefix running this Python with qsmtp and the venv's packages,
    readable by any user; use with env()."""
    return [interpreter()]


def qsmtpctl() -> list[str]:
    """argv prefix running `qsmtpctl` (the same entry point as the script)."""
    return [interpreter(), "-c", "import sys; from qsmtp.ctl.cli import main; "
                                 "sys.argv[0] = 'qsmtpctl'; sys.exit(main())"]


def env(**extra: str) -> dict[str, str]:
    """The environment for python()/qsmtpctl(): the copy first on the path."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
    return {**base, "PYTHONPATH": str(_tree()), "HOME": "/", **extra}
