"""docs/PLUGINS.md covers the code: every built-in plugin module has its
section, the generated hook and result tables list every hook and result,
and the page is what scripts/gen-plugins-doc.py renders from the current
code, byte for byte (a changed docstring or option fails until the page is
regenerated)."""

from __future__ import annotations

import pathlib
import re

import _docgen

from qsmtp.plugins import api

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "PLUGINS.md"


def generator():
    return _docgen.load_script("gen-plugins-doc.py")


def region(text: str, name: str) -> str:
    match = re.search(rf"<!-- generated:{name} -->\n(.*?)<!-- /generated:{name} -->", text, re.S)
    assert match, f"region {name} missing from docs/PLUGINS.md"
    return match.group(1)


def test_every_builtin_plugin_module_has_a_section():
    gen = generator()
    headings = re.findall(r"^### (.+)$", region(DOC.read_text(), "builtins"), re.M)
    modules = gen.builtin_modules()
    assert {"spf", "dkim", "dmarc", "dnsbl", "relay", "queue_maildir"} <= set(modules)
    missing = [m for m in modules if f"`{gen.config_names(m)[0]}`" not in " ".join(headings)]
    assert not missing, (f"not in docs/PLUGINS.md: {missing}; "
                         "run .venv/bin/python scripts/gen-plugins-doc.py")


def test_hook_and_result_tables_are_complete():
    text = DOC.read_text()
    hooks = region(text, "hooks")
    for hook, args in api.HOOKS.items():
        assert f"`hook_{hook}(session{''.join(', ' + a for a in args)})`" in hooks
    results = region(text, "results")
    for result in api.Result:
        assert f"| `{result.name}` |" in results
    assert "`550 5.7.1` Rejected" in results and "`451 4.3.0`" in results


def test_generator_renders_the_current_code():
    gen = generator()
    fresh = gen.render(DOC.read_text())
    for module in gen.builtin_modules():
        assert f"### `{gen.config_names(module)[0]}`" in fresh
    assert "class SubjectGuard(Plugin):" in region(fresh, "example")
    assert "def test_in_a_real_server(serve, monkeypatch):" in region(fresh, "example")
    assert "| `fail_action` | str | `\"deny\"` |" in region(fresh, "builtins")  # spf's table


def test_migration_tables_cover_the_usual_qpsmtpd_files():
    text = DOC.read_text().split("## Migrating from qpsmtpd", 1)[1]
    for name in ("config/plugins", "config/relayclients", "config/rcpthosts",
                 "config/badmailfrom", "config/dnsbl_zones", "config/me", "config/databytes",
                 "sender_permitted_from", "check_earlytalker", "virus/clamdscan"):
        assert f"`{name}`" in text, name


def test_page_is_what_the_generator_renders():
    text = DOC.read_text()
    assert generator().render(text) == text, (
        "docs/PLUGINS.md is stale: run .venv/bin/python scripts/gen-plugins-doc.py")
