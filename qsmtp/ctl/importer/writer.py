"""A Translation -> the text of a commented qsmtp.toml.

Every key carries a comment naming the qpsmtpd file and line it came from;
list values are written one element a line, each with its own origin.
Strings are TOML basic strings with every control character escaped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from qsmtp.ctl.importer.model import Item, Translation
from qsmtp.settings import SECTIONS, SETTINGS


def render(t: Translation, source: str, extra_header: Sequence[str] = ()) -> str:
    out = [f"# qsmtp.toml imported from the qpsmtpd config directory {source}",
           "# by `qsmtpctl import-qpsmtpd`.  Each comment names the qpsmtpd file and",
           "# line a value came from.  Check edits with `qsmtpctl config check FILE`."]
    out += [f"# {line}" for line in extra_header]
    for section in SECTIONS:
        rows = [(s.key, t.keys[s.name]) for s in SETTINGS
                if s.section == section and s.name in t.keys]
        if rows:
            out += ["", f"[{section}]"]
            for key, item in rows:
                out += _key(key, item)
    for plugin in t.plugins:
        out += ["", f"[[plugins]]  # {plugin.origin}", f"name = {value(plugin.name)}"]
        for key, item in plugin.options.items():
            out += _key(key, item)
    return "\n".join(out) + "\n"


def _key(key: str, item: Item) -> list[str]:
    if isinstance(item.value, list) and item.origins and len(item.origins) == len(item.value):
        lines = [f"{key} = [  # {_comment(item.origin)}"]
        lines += [f"    {value(v)},  # {_comment(o)}"
                  for v, o in zip(item.value, item.origins, strict=True)]
        return lines + ["]"]
    return [f"{key} = {value(item.value)}  # {_comment(item.origin)}"]


def _comment(text: str) -> str:
    return " ".join(text.split())  # a comment is one line


def value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
    # JSON's escapes are TOML's; DEL must be escaped in TOML too.
    return json.dumps(str(v), ensure_ascii=False).replace("\x7f", "\\u007f")
