"""Per-connection and per-transaction state handed to plugins.

A fresh Session is built for every connection and a fresh Transaction for
every MAIL FROM, so nothing (notes included) survives into the next client of
a reused worker.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qsmtp import procid

if TYPE_CHECKING:
    from qsmtp.config import Config
    from qsmtp.smtp.address import Address
    from qsmtp.smtp.message import MessageBody

_txn_counter = itertools.count(1)


def _forked() -> None:
    """Transaction numbers count this process's transactions: the warm-up
    session the supervisor serves before forking (warmup.py) is no worker's."""
    global _txn_counter
    _txn_counter = itertools.count(1)


os.register_at_fork(after_in_child=_forked)


@dataclass(frozen=True)
class ConnectionInfo:
    peer_ip: str  # IPv4-mapped IPv6 already normalised to IPv4
    peer_port: int
    local_ip: str
    local_port: int
    service: str = "smtp"  # systemd FileDescriptorName, or "smtp"


@dataclass
class Transaction:
    """One MAIL FROM .. end of DATA (or RSET)."""

    session_id: str
    sender: Address | None = None
    mail_params: dict[str, str | None] = field(default_factory=dict)
    recipients: list[Address] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    body: MessageBody | None = None
    # Header lines (without line end) put above the received message, first
    # line first; headers.py puts Received: here.
    added_headers: list[str] = field(default_factory=list)
    id: str = ""
    wire_size: int = 0  # octets of the message as sent (DATA read to its end)

    def __post_init__(self) -> None:
        if not self.id:
            self.id = f"{self.session_id}.{next(_txn_counter)}"

    def prepend_header(self, name: str, value: str) -> None:
        self.added_headers.insert(0, f"{name}: {value}")


@dataclass
class Session:
    """One client connection."""

    conn: ConnectionInfo
    config: Config
    id: str = ""
    started: float = field(default_factory=time.time)
    remote_host: str | None = None  # TCPREMOTEHOST; core code does no DNS
    helo_host: str | None = None
    esmtp: bool = False
    tls: bool = False
    tls_cipher: str | None = None
    auth_user: str | None = None
    relay_client: bool = False  # set by the relay plugin (or auth)
    notes: dict[str, Any] = field(default_factory=dict)
    transaction: Transaction | None = None
    # `peek_early_talk(wait)`: True when client bytes are buffered or arrive
    # within `wait` seconds, consuming nothing (earlytalker); the engine
    # passes its reader's peek.
    peek_early_talk: Callable[[float], bool] = field(default=lambda wait: False,
                                                     repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.id:
            self.id = f"{procid.pid:x}{int(self.started * 1000) & 0xFFFFFFFF:08x}"

    @property
    def env(self) -> dict[str, str]:
        """The per-connection environment qpsmtpd gave plugins."""
        return {
            "TCPREMOTEIP": self.conn.peer_ip,
            "TCPREMOTEPORT": str(self.conn.peer_port),
            "TCPLOCALIP": self.conn.local_ip,
            "TCPLOCALPORT": str(self.conn.local_port),
            "TCPREMOTEHOST": self.remote_host or "Unknown",
        }

    @property
    def protocol(self) -> str:
        """RFC 3848 protocol name for the Received: header."""
        if not self.esmtp:
            return "SMTP"
        return "ESMTP" + ("S" if self.tls else "") + ("A" if self.auth_user else "")

    def new_transaction(self) -> Transaction:
        self.transaction = Transaction(session_id=self.id)
        return self.transaction
