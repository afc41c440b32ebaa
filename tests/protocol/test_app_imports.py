"""What App.load (qsmtp.app) imports in the supervisor, before the fork:
the [state] backend (sqlite3, ~1 MiB in every process) only when a worker
will open a store, here AUTH's failure limit; never in a worker later."""

from __future__ import annotations

import subprocess
import sys

from protocol_harness import write_config

CODE = ("import sys; from qsmtp import app, config; "
        "app.App.load(config.load(sys.argv[1])); print('sqlite3' in sys.modules)")


def _loads_sqlite(config_path: str) -> bool:
    run = subprocess.run([sys.executable, "-c", CODE, config_path], capture_output=True,
                         text=True, timeout=60, check=True)
    return run.stdout.strip() == "True"


def test_no_state_backend_without_a_feature_that_needs_it(tmp_path):
    assert not _loads_sqlite(write_config(tmp_path))


def test_auth_loads_its_limit_store_backend_before_the_fork(tmp_path):
    users = tmp_path / "users"
    users.write_text("")
    extra = f'\n[[plugins]]\nname = "auth/file"\npath = "{users}"\n'
    assert _loads_sqlite(write_config(tmp_path, extra=extra))
