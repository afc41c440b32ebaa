"""The published file: `<runtime_dir>/registry`, JSON, world-readable.

It tells readers (qsmtpctl) where the segment is (`key`, `shm_id`,
`sem_id`, `pid`, `version`, `slots`) and holds what the fixed-size header
cannot (the whole reload reason, the config file, the listeners).  The
supervisor writes the key alone before the objects exist, so a start killed
half-way leaves the key behind for the next start (registry_cleanup.py).
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
from typing import Any

NAME = "registry"  # file name under runtime_dir


def path(runtime_dir: str) -> str:
    return os.path.join(runtime_dir, NAME)


def read(runtime_dir: str) -> dict[str, Any] | None:
    """The file's dict; None if absent, torn or garbage (it is stale then).
    PermissionError propagates: the caller names the group to join."""
    try:
        with open(path(runtime_dir)) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write(runtime_dir: str, data: dict[str, Any]) -> None:
    """Atomic: readers see the old file or the new one, never half."""
    target = path(runtime_dir)
    tmp = f"{target}.{os.getpid()}.tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
        handle.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def unlink(runtime_dir: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path(runtime_dir))


def names(runtime_dir: str, shm_id: int) -> bool:
    """Does the published file still name this segment (not replaced)?"""
    data = read(runtime_dir)
    return data is not None and data.get("shm_id") == shm_id


def group_name(gid: int | None) -> str:
    """The group to name in "join group X" (the registry's readers)."""
    if gid is None:
        return "?"
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def dir_gid(path: str) -> int | None:
    try:
        return os.stat(path).st_gid
    except OSError:
        return None
