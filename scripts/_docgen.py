"""What the generated-doc scripts (gen-reference.py, gen-plugins-doc.py)
share: the `<!-- generated:NAME -->` regions, and rewriting or checking a
page with them."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys
from collections.abc import Callable
from types import ModuleType

ROOT = pathlib.Path(__file__).resolve().parents[1]
REGION = re.compile(r"(<!-- generated:([\w-]+) -->\n)(.*?)(<!-- /generated:\2 -->)", re.S)


def render(doc: pathlib.Path, text: str, generators: dict[str, Callable[[], str]]) -> str:
    """`text` with every generated region replaced by its generator's output."""
    def replace(match: re.Match) -> str:
        name = match.group(2)
        if name not in generators:
            raise SystemExit(f"{doc}: unknown generated region {name!r}")
        return match.group(1) + generators[name]() + match.group(4)
    return REGION.sub(replace, text)


def main(argv: list[str], doc: pathlib.Path, render: Callable[[str], str], script: str) -> int:
    """Rewrite `doc` in place, or with --check exit 1 when it is stale."""
    current = doc.read_text()
    fresh = render(current)
    if "--check" in argv:
        if fresh != current:
            print(f"{doc.relative_to(ROOT)} is stale: run {script}", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        doc.write_text(fresh)
        print(f"updated {doc.relative_to(ROOT)}")
    return 0


def load_script(name: str) -> ModuleType:
    """One of the scripts/ files (their names have dashes) as a module."""
    path = ROOT / "scripts" / name
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
