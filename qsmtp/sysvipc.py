"""The kernel's tables of SysV IPC objects, /proc/sysvipc/{shm,sem}
(world-readable): key, id, creator and owner uid/gid, creator pid, attach
count.  The one parser for them; sysv_ipc cannot tell these facts
(`sysv_ipc.attach(id)` reports key 0), and qsmtpctl's supervisor proof
relies on the ones the kernel keeps (ctl/proof.py).
"""

from __future__ import annotations

_ID_COLUMN = {"shm": "shmid", "sem": "semid"}


def table(kind: str) -> list[dict[str, str]]:
    """Every row of /proc/sysvipc/<kind> as {column: text}; [] if unreadable."""
    try:
        with open(f"/proc/sysvipc/{kind}") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    if not lines:
        return []
    names = lines[0].split()
    return [dict(zip(names, line.split(), strict=False)) for line in lines[1:]]


def row(kind: str, ipc_id: int) -> dict[str, str] | None:
    """The row of one object (by id), None if there is none."""
    column = _ID_COLUMN[kind]
    for fields in table(kind):
        if fields.get(column) == str(ipc_id):
            return fields
    return None


def gid(kind: str, ipc_id: int) -> int | None:
    fields = row(kind, ipc_id)
    return int(fields["gid"]) if fields else None


def key(kind: str, ipc_id: int) -> int | None:
    fields = row(kind, ipc_id)
    return int(fields["key"]) if fields else None
