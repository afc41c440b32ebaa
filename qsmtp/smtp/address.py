"""RFC 5321 paths: `<>`, `<local@domain>`, `<@route:local@domain>`, quoted
local parts, address literals. `parse_path` is the only parser of addresses."""

from __future__ import annotations

from dataclasses import dataclass


class AddressError(ValueError):
    """Unparseable path; the message is safe to show to the client."""


@dataclass(frozen=True)
class Address:
    local: str  # as on the wire: a quoted local part keeps its quotes
    domain: str | None  # None for <> and for a bare local part (<postmaster>)
    route: tuple[str, ...] = ()  # source route hops (<@a,@b:u@d>), kept for policy
    raw: str = ""  # the path exactly as the client sent it, brackets included

    @property
    def is_null(self) -> bool:
        return self.local == "" and self.domain is None

    @property
    def local_unquoted(self) -> str:
        """Local part with quoting and quoted-pairs removed."""
        text = self.local
        if len(text) >= 2 and text[0] == text[-1] == '"':
            out, escaped = [], False
            for char in text[1:-1]:
                if escaped or char != "\\":
                    out.append(char)
                    escaped = False
                else:
                    escaped = True
            return "".join(out)
        return text

    @property
    def address(self) -> str:
        """`local@domain` without brackets or route; '' for the null sender."""
        if self.domain is None:
            return self.local
        return f"{self.local}@{self.domain}"

    def __str__(self) -> str:
        return self.address


def parse_path(text: str, *, allow_null: bool, smtputf8: bool = False) -> Address:
    """Parse a MAIL/RCPT path (the part after `FROM:`/`TO:`, without params).

    Implemented by the engine (see smtp/address.py tests)."""
    raise NotImplementedError
