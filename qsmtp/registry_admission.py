"""Per-IP admission (server.max_from_ip): may one more session from this
peer start?  Pure: it reads the slot area the registry copied under its
lock, so the count and the busy mark that follows are one atomic step.

A busy slot's state, family and peer bytes are adjacent in the layout, so
"a session of this peer" is one MATCH_SIZE-byte comparison per slot.
"""

from __future__ import annotations

from qsmtp.registry_layout import BUSY, MATCH_SIZE, S_MATCH, SLOT_SIZE, normalise_peer


def busy_record(peer_ip: str | None) -> bytes:
    """The slot bytes from S_MATCH on of a session busy with this peer."""
    family, raw = normalise_peer(peer_ip)
    return bytes([BUSY, family]) + raw


def refused(area: bytes, mine: int, record: bytes, max_from_ip: int) -> int | None:
    """None if the session may start; else the count of sessions the peer
    already has in the other slots of `area` (the whole slot area).  A peer
    without an IP (family 0) and max_from_ip 0 are never refused."""
    if not record[1] or max_from_ip <= 0:
        return None
    own = mine * SLOT_SIZE + S_MATCH
    count = sum(1 for start in range(S_MATCH, len(area), SLOT_SIZE)
                if start != own and area[start:start + MATCH_SIZE] == record)
    return count if count >= max_from_ip else None
