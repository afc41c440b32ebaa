"""The registry's bytes: the layout of the shared-memory segment and how it is
encoded and decoded. Pure (no sysv_ipc): registry.py owns the segment.

Layout (little-endian, no implicit padding), HEADER_SIZE + slots * SLOT_SIZE:

  header (128 bytes)                    slot (80 bytes, one per possible worker)
  0   8s magic b"QSMTPREG"              0   I  pid (0 = free)
  8   I  layout version                 4   I  generation it was forked in
  12  I  slot size                      8   I  sessions served
  16  I  slots                          12  H  (pad)
  20  I  supervisor pid                 14  B  state: free/reserved/idle/busy
  24  I  generation                     15  B  peer family: 0, 4, 6
  28  B  supervisor state               16  16s peer address (inet_pton)
  29  B  reload status (none/ok/failed) 32  16s service (listener name)
  30  H  (pad)                          48  d  since (busy since / idle since)
  32  d  started                        56  d  heartbeat (CLOCK_MONOTONIC)
  40  Q  sessions of released slots     64  d  started (fork time)
  48  I  children (max workers)         72  8x (spare)
  52  I  idle_children
  56  I  max_from_ip
  60  I  lock recoveries
  64  d  reload time
  72  d  throttled_until (boot-loop back-off, 0 = none)
  80  40s reload reason (UTF-8, NUL padded; the whole one is in the
           published file, Registry.publish)
  120 8s instance: which runtime dir made it (`instance_id`), so the
           leftover cleanup touches only its own instance's segments

sessions_total (as decoded) = the header's count + every live slot's
"sessions served": a worker bumps only its own slot, without the lock, and
the supervisor moves a slot's count into the header when it releases it.

State, family and peer are adjacent (slot bytes 14..32) so the per-IP count
compares one MATCH_SIZE-byte slice per slot, and mark_busy is a single write.
The offsets below are computed from the field lists, never typed twice.
"""

from __future__ import annotations

import socket
import struct

# hashlib's own BLAKE2 (built into CPython), without hashlib itself: that
# loads OpenSSL's libcrypto, ~3 MB mapped into every process of the fleet.
from _blake2 import blake2b
from typing import Any

MAGIC = b"QSMTPREG"
VERSION = 2  # 2: reload reason 48 -> 40 bytes, + instance

_HEADER_FIELDS = (
    ("magic", "8s"), ("version", "I"), ("slot_size", "I"), ("slots", "I"),
    ("supervisor_pid", "I"), ("generation", "I"), ("state", "B"), ("reload_status", "B"),
    ("", "H"), ("started", "d"), ("sessions_total", "Q"), ("children", "I"),
    ("idle_children", "I"), ("max_from_ip", "I"), ("lock_recoveries", "I"),
    ("reload_time", "d"), ("throttled_until", "d"), ("reload_reason", "40s"),
    ("instance", "8s"))
_SLOT_FIELDS = (
    ("pid", "I"), ("generation", "I"), ("sessions", "I"), ("", "H"), ("state", "B"),
    ("family", "B"), ("peer", "16s"), ("service", "16s"), ("since", "d"),
    ("heartbeat", "d"), ("started", "d"), ("", "8x"))


def _offsets(fields: tuple[tuple[str, str], ...]) -> dict[str, tuple[int, str]]:
    """name -> (offset, struct format) from a field list (no padding: "<")."""
    table, offset = {}, 0
    for name, fmt in fields:
        if name:
            table[name] = (offset, "<" + fmt)
        offset += struct.calcsize("<" + fmt)
    return table


HEADER = struct.Struct("<" + "".join(fmt for _, fmt in _HEADER_FIELDS))
HEADER_SIZE = 128
SLOT = struct.Struct("<" + "".join(fmt for _, fmt in _SLOT_FIELDS))
SLOT_SIZE = SLOT.size
assert HEADER.size == HEADER_SIZE and SLOT_SIZE == 80

FREE, RESERVED, IDLE, BUSY = 0, 1, 2, 3
SLOT_STATES = {FREE: "free", RESERVED: "starting", IDLE: "idle", BUSY: "busy"}
# "config-invalid": up on systemd's sockets, answering 421, no workers (degraded.py)
SUPERVISOR_STATES = ("starting", "running", "reloading", "stopping", "config-invalid")
RELOAD_STATUS = ("none", "ok", "failed")

_H = _offsets(_HEADER_FIELDS)
_S = _offsets(_SLOT_FIELDS)
# Header field offsets, for single-field writes.
H_SLOTS, H_PID, H_GEN = _H["slots"][0], _H["supervisor_pid"][0], _H["generation"][0]
H_STATE, H_RELOAD = _H["state"][0], _H["reload_status"][0]
H_SESSIONS, H_LOCKREC = _H["sessions_total"][0], _H["lock_recoveries"][0]
H_REASON, H_INSTANCE = _H["reload_reason"][0], _H["instance"][0]
REASON_SIZE = struct.calcsize(_H["reload_reason"][1])
INSTANCE_SIZE = struct.calcsize(_H["instance"][1])
HEADER_FIELDS = {name: _H[name] for name in (  # what set_header may write
    "supervisor_pid", "generation", "started", "sessions_total", "children",
    "idle_children", "max_from_ip", "reload_time", "throttled_until")}
# Slot field offsets (relative to the slot).
S_SESSIONS, S_SINCE, S_HEARTBEAT = _S["sessions"][0], _S["since"][0], _S["heartbeat"][0]
S_STATE, S_SERVICE = _S["state"][0], _S["service"][0]
SERVICE_SIZE = struct.calcsize(_S["service"][1])
PEER_SIZE = struct.calcsize(_S["peer"][1])
# state + family + peer: what the per-IP count compares (registry_admission.py)
S_MATCH, MATCH_SIZE = S_STATE, S_SERVICE - S_STATE
S_PID = _S["pid"][0]
# The field types single-field reads and writes use.
U32, U64, F64 = struct.Struct("<I"), struct.Struct("<Q"), struct.Struct("<d")
PACK_D, PACK_I, PACK_Q = F64.pack, U32.pack, U64.pack


def instance_id(runtime_dir: str) -> bytes:
    """The header's `instance`: a digest of the runtime dir's real path.  A
    crashed run whose published file is gone is recognised by it; another
    instance's segment (another runtime dir) never matches."""
    return blake2b(runtime_dir.encode("utf-8", "surrogateescape"),
                   digest_size=INSTANCE_SIZE).digest()


def header_pid(head: bytes) -> int:
    """The supervisor pid of a header (at least HEADER_SIZE bytes)."""
    return int(U32.unpack_from(head, H_PID)[0])


def header_slots(head: bytes) -> int:
    return int(U32.unpack_from(head, H_SLOTS)[0])


def plain_ip(ip: str) -> str:
    """The one form of a client IP everywhere (sessions, logs, the per-IP
    count): IPv4-mapped IPv6 (`::ffff:192.0.2.7`) becomes IPv4, an IPv6
    scope id (`%eth0`) is dropped; anything that is no IP is returned as is."""
    ip = ip.split("%", 1)[0]
    try:
        raw = socket.inet_pton(socket.AF_INET6, ip) if ":" in ip else None
    except OSError:
        return ip
    if raw is not None and raw[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return ip


def normalise_peer(ip: str | None) -> tuple[int, bytes]:
    """-> (family 4/6, 16 bytes) of plain_ip(ip); (0, zeros) if there is no
    usable IP (unix socket, garbage), which is never counted."""
    if not ip:
        return 0, bytes(16)
    ip = plain_ip(ip)
    try:
        raw = socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    except OSError:
        return 0, bytes(16)
    if len(raw) == 4:
        return 4, raw + bytes(12)
    return 6, raw


def format_peer(family: int, raw: bytes) -> str | None:
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == 6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return None


def decode_text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def encode_text(text: str, size: int) -> bytes:
    data = text.encode("utf-8")[:size]
    return data.decode("utf-8", "ignore").encode("utf-8").ljust(size, b"\0")


def decode(raw: bytes, consistent: bool = True) -> dict[str, Any]:
    """Bytes of a whole segment -> the snapshot dict qsmtpctl renders."""
    (magic, version, _slot_size, slots, pid, generation, state, reload_status, _,
     started, sessions_total, children, idle_children, max_from_ip, recoveries,
     reload_time, throttled, reason, _instance) = HEADER.unpack_from(raw, 0)
    workers = []
    served = 0
    for index in range(slots):
        (wpid, wgen, sessions, _, wstate, family, peer, service, since, heartbeat,
         wstarted) = SLOT.unpack_from(raw, HEADER_SIZE + index * SLOT_SIZE)
        if wstate == FREE:
            continue
        served += sessions
        workers.append({
            "slot": index, "pid": wpid, "generation": wgen,
            "state": SLOT_STATES.get(wstate, "unknown"),
            "peer": format_peer(family, peer), "service": decode_text(service) or None,
            "since": since, "heartbeat": heartbeat, "started": wstarted,
            "sessions": sessions,
        })
    return {
        "magic_ok": magic == MAGIC, "version": version, "consistent": consistent,
        "supervisor": {
            "pid": pid, "generation": generation, "started": started,
            "state": SUPERVISOR_STATES[state] if state < len(SUPERVISOR_STATES) else "?",
            "sessions_total": sessions_total + served, "lock_recoveries": recoveries,
            "reload_status": RELOAD_STATUS[reload_status]
            if reload_status < len(RELOAD_STATUS) else "?",
            "reload_reason": decode_text(reason), "reload_time": reload_time,
            "throttled_until": throttled or None,
        },
        "pool": {"max": children, "slots": slots, "idle_children": idle_children,
                 "max_from_ip": max_from_ip},
        "workers": workers,
    }
