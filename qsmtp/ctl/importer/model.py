"""What an import produces: qsmtp keys and plugin tables, each value with the
qpsmtpd file and line it came from, plus the three lists of the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Item:
    value: Any
    origin: str  # "/etc/qpsmtpd/me:3", or a sentence when no single line applies
    origins: list[str] | None = None  # a list value: one origin per element


@dataclass
class PluginOut:
    name: str
    origin: str
    options: dict[str, Item] = field(default_factory=dict)
    sources: set[str] = field(default_factory=set)  # qpsmtpd files already read


@dataclass
class Translation:
    keys: dict[str, Item] = field(default_factory=dict)  # "server.me" -> Item
    plugins: list[PluginOut] = field(default_factory=list)
    carried: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    human: list[str] = field(default_factory=list)

    def set(self, key: str, value: Any, origin: str,
            origins: list[str] | None = None) -> None:
        self.keys[key] = Item(value, origin, origins)
        self.carried.append(f"{origin}: {key} = {_short(value)}")

    def plugin(self, name: str, origin: str) -> PluginOut:
        """The table for `name`, created at its first mention (qpsmtpd's
        check_badmailfrom + check_badmailfrom_patterns become one table)."""
        for entry in self.plugins:
            if entry.name == name:
                return entry
        entry = PluginOut(name, origin)
        self.plugins.append(entry)
        return entry

    def option(self, plugin: PluginOut, key: str, value: Any, origin: str,
               origins: list[str] | None = None) -> None:
        plugin.options[key] = Item(value, origin, origins)
        self.carried.append(f"{origin}: plugins.{plugin.name}.{key} = {_short(value)}")

    def drop(self, origin: str, what: str, why: str) -> None:
        self.dropped.append(f"{origin}: {what}: {why}")

    def ask(self, origin: str, what: str) -> None:
        self.human.append(f"{origin}: {what}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 70 else text[:67] + "..."
