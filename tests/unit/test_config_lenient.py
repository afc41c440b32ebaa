"""What qsmtp and qsmtpctl still read from a broken config file (where the
running instance is), the default file both use, and TLS errors that name
the right key."""

from __future__ import annotations

import pytest

from helpers.tls import make_cert
from qsmtp import config as config_mod
from qsmtp.app import App
from qsmtp.config import ConfigError


def test_peek_reads_valid_lines_of_invalid_toml(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text('[server]\nruntime_dir = "/run/elsewhere"\nchildren = oops\n'
                    'me = "mx.test"\n[[plugins]]\nname = "x"\n[relay]\nme = 1\n')
    with pytest.raises(ConfigError):
        config_mod.load(str(path))
    got = config_mod.peek(str(path), ("server.runtime_dir", "server.me", "server.children"))
    assert got == {"server.runtime_dir": "/run/elsewhere", "server.me": "mx.test",
                   "server.children": config_mod.BY_NAME["server.children"].default}


def test_peek_ignores_values_that_fail_their_check(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text('[server]\ngrace = -5\nruntime_dir = 7\n')
    got = config_mod.peek(str(path), ("server.grace", "server.runtime_dir"))
    assert got["server.grace"] == config_mod.BY_NAME["server.grace"].default
    assert got["server.runtime_dir"] == "/run/qsmtp"
    assert config_mod.peek(None, ("server.grace",), {"server.grace": 3}) == {"server.grace": 3}
    assert config_mod.peek(str(tmp_path / "missing.toml"), ("server.grace",)) == \
        {"server.grace": config_mod.BY_NAME["server.grace"].default}


def test_default_path_is_shared(monkeypatch, tmp_path):
    assert config_mod.default_path("/x.toml") == "/x.toml"
    monkeypatch.setattr(config_mod, "DEFAULT_PATH", str(tmp_path / "qsmtp.toml"))
    assert config_mod.default_path(None) is None
    (tmp_path / "qsmtp.toml").write_text("")
    assert config_mod.default_path(None) == str(tmp_path / "qsmtp.toml")


@pytest.mark.parametrize("missing", ["tls.cert", "tls.key"])
def test_unreadable_tls_file_names_its_key_and_the_os_error(tmp_path, missing):
    cert, key = make_cert(tmp_path)
    paths = {"tls.cert": str(cert), "tls.key": str(key)}
    paths[missing] = str(tmp_path / "nope.pem")
    path = tmp_path / "q.toml"
    path.write_text(f'[tls]\ncert = "{paths["tls.cert"]}"\nkey = "{paths["tls.key"]}"\n'
                    f'[queue]\npath = "{tmp_path}/maildir"\n')
    with pytest.raises(ConfigError) as err:
        App.load(config_mod.load(str(path)))
    assert str(err.value) == (f"{path}: {missing}: cannot read {tmp_path}/nope.pem: "
                              f"No such file or directory")
