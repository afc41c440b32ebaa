"""`qsmtp serve` option handling: generated from settings.SETTINGS, only
given flags override the file, usage errors exit 2, bad values exit 78 with
one line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from qsmtp import cli
from qsmtp.settings import SETTINGS


@pytest.fixture
def captured(monkeypatch):
    """Stop before anything is bound or forked: record what _serve got."""
    calls = []

    def fake_serve(config_path, flags):
        from qsmtp import config

        calls.append((config_path, flags, config.load(config_path, flags)))
        return 0
    monkeypatch.setattr(cli, "_serve", fake_serve)
    return calls


def run(*args):
    return CliRunner(mix_stderr=False).invoke(cli.cli, list(args))


def test_every_flagged_setting_is_an_option():
    params = {p.name: p for p in cli.serve.params}
    for setting in SETTINGS:
        if not setting.flags:
            continue
        opts = set(params[setting.key].opts)
        assert set(setting.flags) <= opts, setting.name
        assert params[setting.key].multiple == (setting.type is list)
        assert params[setting.key].is_flag == (setting.type is bool)
    assert "config_path" in params


def test_only_given_flags_override_the_file(tmp_path, captured):
    path = tmp_path / "q.toml"
    path.write_text('[server]\nchildren = 7\nidle_children = 2\npretty_child = true\n')
    assert run("serve", "--config", str(path), "--max-from-ip", "4").exit_code == 0
    _path, flags, config = captured[0]
    assert flags == {"server.max_from_ip": 4}
    assert config.server.children == 7 and config.server.pretty_child is True
    assert config.origin["server.max_from_ip"] == "flag"


def test_list_and_bool_flags(captured):
    result = run("serve", "--listen-address", "127.0.0.1:2600", "--interface", "[::1]",
                 "--port", "2601", "--pretty-child", "--debug")
    assert result.exit_code == 0, result.output
    _path, flags, config = captured[0]
    assert flags["server.listen"] == ["127.0.0.1:2600", "[::1]"]
    assert config.server.pretty_child and config.server.debug


@pytest.mark.parametrize("args, needle", [
    (["--children", "0"], "server.children"),
    (["--idle-children", "20", "--children", "5"], "server.idle_children"),
    (["--listen-address", "1.2.3:x"], "server.listen"),
    (["--renice-parent", "40"], "server.renice_parent"),
    (["--debug", "--quiet"], "server.quiet"),
])
def test_bad_values_exit_78_with_one_line(args, needle):
    result = run("serve", *args)
    assert result.exit_code == 78, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qsmtp: command line: " + needle)
    assert "Traceback" not in result.stderr


def test_bad_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[server\nchildren = ")
    result = run("serve", "--config", str(path))
    assert result.exit_code == 78
    assert result.stderr.startswith(f"qsmtp: {path}: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_user_is_a_config_error(tmp_path):
    result = run("serve", "--user", "no-such-user-qsmtp", "--listen-address",
                 "127.0.0.1:1")
    assert result.exit_code == 78
    assert "server.user" in result.stderr and "no such user" in result.stderr


@pytest.mark.parametrize("args", [["serve", "--bogus"], ["serve", "--children", "many"],
                                  ["nonsense"]])
def test_usage_errors_are_clicks(args):
    assert run(*args).exit_code == 2


@pytest.mark.parametrize("args", [["--version"], ["serve", "--version"]])
def test_version(args):
    result = run(*args)
    assert result.exit_code == 0
    assert result.output.startswith("qsmtp ")
