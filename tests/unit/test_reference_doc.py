"""docs/REFERENCE.md is the operator contract: its generated tables match the
code byte for byte (scripts/gen-reference.py --check), and every setting,
exit code, qsmtpctl command and status field is in it.  Nothing in the
repository points outside it."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import _docgen

from qsmtp import exitcodes
from qsmtp.ctl.cli import cli as ctl_cli
from qsmtp.settings import SETTINGS

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "REFERENCE.md"
SCRIPT = ROOT / "scripts" / "gen-reference.py"


def generator():
    return _docgen.load_script(SCRIPT.name)


def section(text: str, heading: str) -> str:
    match = re.search(rf"^(#+) {re.escape(heading)}\n(.*?)(?=^#{{1,2}} |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r} in docs/REFERENCE.md"
    return match.group(2)


def test_generated_tables_are_current():
    run = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr + "(run .venv/bin/python scripts/gen-reference.py)"


def test_every_setting_and_flag_is_documented():
    keys = section(DOC.read_text(), "Keys")
    for setting in SETTINGS:
        assert f"#### `[{setting.section}]`" in keys
        assert f"| `{setting.key}` |" in keys, setting.name
        for flag in setting.flags:
            assert f"`{flag}" in DOC.read_text(), flag


def test_every_exit_code_is_documented_and_distinct():
    text = section(DOC.read_text(), "Exit codes")
    for code in exitcodes.CODES:
        assert f"| {code.code} | `{code.name}` |" in text
    numbers = [c.code for c in exitcodes.CODES]
    assert len(numbers) == len(set(numbers))
    constants = {v for k, v in vars(exitcodes).items() if k.startswith("EX_")}
    assert constants == set(numbers), "every EX_ constant needs a row in CODES"


def test_qsmtpctl_help_lists_the_same_exit_codes():
    from click.testing import CliRunner

    assert all(code.short for code in exitcodes.CODES)
    output = " ".join(CliRunner().invoke(ctl_cli, ["--help"]).output.split())
    assert f"Exit codes: {exitcodes.summary()}." in output
    assert "78 bad config" in output and "77 not allowed" in output


def test_every_qsmtpctl_command_is_documented():
    text = section(DOC.read_text(), "qsmtpctl")
    for name, command in ctl_cli.commands.items():
        subs = getattr(command, "commands", None)
        if subs and name != "user":
            for sub in subs:
                assert f"`{name} {sub}" in text, f"{name} {sub}"
        else:
            assert f"`{name}" in text, name


def test_status_json_fields_cover_the_renderer():
    gen = generator()
    from qsmtp.ctl import render

    doc = json.loads(render.dumps(gen._sample_snapshot(), 1_700_000_000.0))
    table = section(DOC.read_text(), "`status --json`")
    for name in gen._fields(doc):
        assert f"| `{name}` |" in table, name
    for required in ("supervisor.pid", "pool.max", "pool.workers", "pool.busy", "pool.idle",
                     "workers[].pid", "workers[].state", "workers[].peer",
                     "workers[].sessions", "peers", "supervisor.sessions_total",
                     "supervisor.generation"):
        assert f"| `{required}` |" in table, required


def _repo_files():
    skip = {".git", ".venv", ".run", "dist", "build", ".pytest_cache", ".hypothesis",
            "__pycache__", ".cache", ".mypy_cache", ".ruff_cache"}
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")]
        for name in files:
            if not name.endswith((".png", ".gz", ".deb", ".rpm", ".sqlite", ".pyc")):
                path = pathlib.Path(top, name)
                yield path.relative_to(ROOT), path


def test_nothing_points_outside_the_repository():
    # The contract lives in docs/REFERENCE.md; a reader never has the parent
    # directory's files.  Built from pieces so this file does not match itself.
    spec = "SP" + "EC"
    outside = re.compile("|".join([r"\.\./" + "shared", rf"\b{spec}\b"]))
    offenders = []
    for rel, path in _repo_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        offenders += [f"{rel}:{n}" for n, line in enumerate(text.splitlines(), 1)
                      if outside.search(line)]
    assert not offenders, f"point to docs/REFERENCE.md instead: {offenders}"
