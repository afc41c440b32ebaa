"""The worked example of docs/PLUGINS.md: docs/examples/subject_guard.py,
loaded the way an operator loads a third-party plugin (`module:Class` on
PYTHONPATH), unit-tested through the Dispatcher and then run in a real
`qsmtp serve` with smtplib as the client.
"""

from __future__ import annotations

import pathlib
import smtplib
import sys

import pytest

from helpers.fakes import make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.dispatch import Dispatcher

# The example loads by name (`subject_guard:SubjectGuard`), as an operator's
# plugin on PYTHONPATH would.
EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "docs" / "examples"
sys.path.insert(0, str(EXAMPLES))

PLUGIN = """
[[plugins]]
name = "subject_guard:SubjectGuard"
patterns = ["(?i)\\\\bviagra\\\\b", "^\\\\[SPAM\\\\]"]
"""


def load(tmp_path, plugin_toml=PLUGIN):
    path = tmp_path / "qsmtp.toml"
    path.write_text(f'[queue]\npath = "{tmp_path / "maildir"}"\n{plugin_toml}')
    return qconfig.load(str(path))


def test_hooks_through_the_dispatcher(tmp_path):
    config = load(tmp_path)
    plugins = Dispatcher.load(config)
    spam = make_session(config, message=b"Subject: cheap VIAGRA now\n\nbuy\n")
    result = plugins.run("data_headers_end", spam)
    assert (result.result, result.message) == (Result.DENY,
                                               "5.7.1 Message refused by subject policy")
    assert spam.transaction.notes["subject_guard"] == "(?i)\\bviagra\\b"
    ham = make_session(config, message=b"Subject: lunch?\n\nat noon\n")
    assert plugins.run("data_headers_end", ham).result is Result.DECLINED
    plugins.run("data_post", ham)
    assert "X-Subject-Guard: checked" in ham.transaction.added_headers


@pytest.mark.parametrize("options", ['patterns = []', 'patterns = ["("]',
                                     'patterns = ["x"]\naction = "bounce"'])
def test_bad_options_stop_the_load(tmp_path, options):
    with pytest.raises(PluginError):
        Dispatcher.load(load(tmp_path, f'[[plugins]]\nname = "subject_guard:SubjectGuard"'
                                       f'\n{options}\n'))


def test_in_a_real_server(serve, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLES))  # where the operator put it
    srv = serve(extra_toml=PLUGIN)
    with smtplib.SMTP(srv.host, srv.port, timeout=15) as client:
        client.ehlo("client.test")
        client.mail("a@client.test")
        client.rcpt("u@example.test")
        code, text = client.data(b"Subject: [SPAM] hello\r\n\r\nbody\r\n")
        assert (code, text) == (554, b"5.7.1 Message refused by subject policy")
        client.mail("a@client.test")
        client.rcpt("u@example.test")
        assert client.data(b"Subject: hello\r\n\r\nbody\r\n")[0] == 250
    [stored] = (srv.maildir / "new").iterdir()
    assert b"\nX-Subject-Guard: checked\nSubject: hello\n" in stored.read_bytes()
