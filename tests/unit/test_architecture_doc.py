"""docs/ARCHITECTURE.md's module table names every module of the package:
a module without a row is a module nobody can find the owner of."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "qsmtp"


def table_entries() -> set[str]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    modules = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", modules, re.M))


def covered(module: str, entries: set[str]) -> bool:
    if module in entries:
        return True
    parts = module.split("/")
    # a directory row (`state/`) owns the modules in it
    if any("/".join(parts[:n]) + "/" in entries for n in range(1, len(parts))):
        return True
    # `plugins/builtin/*`: each plugin is documented in docs/PLUGINS.md
    return module.startswith("plugins/builtin/") and not parts[-1].startswith("_") \
        and "plugins/builtin/*" in entries


def test_every_module_has_a_row():
    entries = table_entries()
    modules = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if p.name != "__init__.py")
    assert len(modules) > 40
    missing = [m for m in modules if not covered(m, entries)]
    assert not missing, f"add a row to docs/ARCHITECTURE.md's module table: {missing}"


def test_no_row_for_a_module_that_is_gone():
    stale = [e for e in table_entries() if e.endswith(".py") and not (PACKAGE / e).exists()]
    assert not stale, stale
