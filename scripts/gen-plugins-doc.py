#!/usr/bin/env python3
"""Regenerate the generated parts of docs/PLUGINS.md from the code.

    .venv/bin/python scripts/gen-plugins-doc.py          # rewrite in place
    .venv/bin/python scripts/gen-plugins-doc.py --check  # exit 1 if stale

The document is hand-written prose with regions between
`<!-- generated:NAME -->` and `<!-- /generated:NAME -->`; only those are
replaced:
- `hooks`: the hook list (qsmtp/plugins/api.py HOOKS, stages from
  qsmtp/smtp/replies.py STAGE_OF_HOOK);
- `results`: hook results -> SMTP replies (replies.REFUSALS, PLUGIN_FAILED);
- `example`: docs/examples/subject_guard.py and its test, verbatim;
- `builtins`: one section per module in qsmtp/plugins/builtin/ (not the
  `_private` helpers): its docstring, then a table of its `options`.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # also when loaded by path

import _docgen  # noqa: E402

from qsmtp.plugins import api, dispatch  # noqa: E402
from qsmtp.smtp import replies  # noqa: E402

DOC = ROOT / "docs" / "PLUGINS.md"
BUILTIN_DIR = ROOT / "qsmtp" / "plugins" / "builtin"
EXAMPLE = ROOT / "docs" / "examples" / "subject_guard.py"
EXAMPLE_TEST = ROOT / "tests" / "integration" / "test_example_plugin.py"

# When each hook fires; the arguments come from api.HOOKS.
HOOK_WHEN = {
    "pre_connection": "a client connected, before anything is sent",
    "connect": "before the 220 greeting",
    "helo": "HELO",
    "ehlo": "EHLO",
    "mail": "MAIL FROM (a fresh transaction exists)",
    "rcpt": "each RCPT TO; DECLINED by every plugin = `450 4.7.1` (fail closed)",
    "data": "DATA, before the 354",
    "data_headers_end": "the header section is complete (body still arriving); "
                        "a refusal is sent after the final dot",
    "data_post": "the whole message is in `txn.body`; add headers, scan, refuse",
    "queue_pre": "just before queueing",
    "queue": "store the message (the queue plugin answers OK)",
    "queue_post": "after a successful queue (result ignored)",
    "vrfy": "VRFY",
    "noop": "NOOP",
    "quit": "QUIT",
    "reset_transaction": "RSET, a new MAIL, or the end of a transaction (result ignored)",
    "disconnect": "the connection is closing (result ignored)",
    "post_connection": "after the connection closed (result ignored)",
    "unrecognized_command": "an unknown verb",
    "auth": "AUTH with decoded credentials: OK = authenticated, DENY = 535",
}
STAGE_NAMES = {replies.CONNECT: "connect", replies.COMMAND: "command",
               replies.DATA: "data"}


def hooks_table() -> str:
    rows = ["| hook | method signature | reply stage | when |", "|---|---|---|---|"]
    for hook, args in api.HOOKS.items():
        signature = f"`hook_{hook}(session{''.join(', ' + a for a in args)})`"
        stage = STAGE_NAMES.get(replies.STAGE_OF_HOOK.get(hook), "-")
        rows.append(f"| `{hook}` | {signature} | {stage} | {HOOK_WHEN.get(hook, '')} |")
    return "\n".join(rows) + "\n"


def results_table() -> str:
    rows = ["| result | connect stage | command stage | data stage |", "|---|---|---|---|"]
    for result in api.Result:
        cells = []
        for stage in (replies.CONNECT, replies.COMMAND, replies.DATA):
            reply = replies.REFUSALS.get((stage, result))
            cells.append(_reply_cell(reply) if reply else _success_cell(result))
        rows.append(f"| `{result.name}` | " + " | ".join(cells) + " |")
    failed = replies.PLUGIN_FAILED
    # At connect time there is no 451 greeting: session.greet() sends 421.
    rows.append("| hook raised / overran `hook_timeout` | `421 4.3.0` Temporary local "
                f"problem + close | {_reply_cell(failed)} | {_reply_cell(failed)} |")
    return "\n".join(rows) + "\n"


def _reply_cell(reply: replies.Reply) -> str:
    text = reply.text if isinstance(reply.text, str) else " ".join(reply.text)
    return f"`{reply.code} {reply.enhanced}` {text}" + (" + close" if reply.close else "")


def _success_cell(result: api.Result) -> str:
    return {api.Result.OK: "the stage's success reply (plugin text replaces its text)",
            api.Result.DONE: "like OK; the plugin handled it",
            api.Result.DECLINED: "next plugin; none left: the default"}[result]


def example_block() -> str:
    out = []
    for path in (EXAMPLE, EXAMPLE_TEST):
        rel = path.relative_to(ROOT)
        out.append(f"`{rel}`:\n\n```python\n{path.read_text().rstrip()}\n```\n")
    return "\n".join(out)


# -- built-in plugins ------------------------------------------------------------
def builtin_modules() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.py") if not p.stem.startswith("_"))


def config_names(module: str) -> list[str]:
    """The `[[plugins]] name`s a built-in module answers to."""
    first = module
    if module.startswith(("queue_", "auth_")):
        first = module.replace("_", "/", 1)
    names = [first] + [n for n, m in dispatch.BUILTIN_ALIASES.items() if m == module]
    return list(dict.fromkeys(names))


def plugin_section(module: str) -> str:
    mod = importlib.import_module(f"{dispatch.BUILTIN_PACKAGE}.{module}")
    doc = inspect.cleandoc(mod.__doc__ or f"{module} -- (no docstring)")
    first, _, rest = doc.partition("\n\n")
    title = " ".join(first.split())
    names = config_names(module)
    heading = ", ".join(f"`{n}`" for n in names)
    out = [f"### {heading}", "", f"*{title}*", "", rest.strip(), ""]
    for name in names:
        try:
            cls = dispatch.plugin_class(name)
        except api.PluginError as exc:
            out += [f"(`{name}` cannot be loaded here: {exc.reason})", ""]
            continue
        label = f"Options of `{name}`" if len(names) > 1 else "Options"
        if cls.options:
            out += [f"{label} (`{cls.__name__}.options`):", "", _options_table(cls), ""]
        else:
            out += [f"{label}: none.", ""]
    return "\n".join(out)


def _options_table(cls: type) -> str:
    rows = ["| option | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for key, opt in cls.options.items():
        allowed = ", ".join(f"`{c}`" for c in opt.choices) if opt.choices else ""
        if opt.bounds:
            allowed = f"{opt.bounds[0]:g} to {opt.bounds[1]:g}"
        rows.append(f"| `{key}` | {opt.type.__name__} | `{_toml(opt.default)}` | {allowed} "
                    f"| {opt.help.replace('|', '/')} |")
    return "\n".join(rows)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def builtins_block() -> str:
    index = " · ".join(f"[`{config_names(m)[0]}`](#{_anchor(m)})" for m in builtin_modules())
    sections = [plugin_section(m) for m in builtin_modules()]
    return index + "\n\n" + "\n".join(sections)


def _anchor(module: str) -> str:
    heading = ", ".join(f"`{n}`" for n in config_names(module))
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


GENERATORS = {"hooks": hooks_table, "results": results_table, "example": example_block,
              "builtins": builtins_block}


def render(text: str) -> str:
    return _docgen.render(DOC, text, GENERATORS)


def main(argv: list[str]) -> int:
    return _docgen.main(argv, DOC, render, "scripts/gen-plugins-doc.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
