"""`server.me` defaults to this host's FQDN, by Postfix's myhostname rule
(gethostname(), its fully-qualified name, else NAME.localdomain); never the
old fixed `localhost.localdomain`. socket is mocked: pure logic."""

from __future__ import annotations

import socket

import pytest

from qsmtp import config, settings


@pytest.mark.parametrize("hostname,fqdn,expected", [
    ("mx1.example.org", None, "mx1.example.org"),        # already qualified
    ("mx1", "mx1.corp.example", "mx1.corp.example"),     # /etc/hosts knows it
    ("vm", "localhost", "vm.localdomain"),               # only a loopback alias
    ("vm", "vm", "vm.localdomain"),                      # nothing known
    ("MX2", "MX2.Example.ORG", "mx2.example.org"),
])
def test_host_fqdn_follows_postfix_myhostname(monkeypatch, hostname, fqdn, expected):
    monkeypatch.setattr(socket, "gethostname", lambda: hostname)
    monkeypatch.setattr(socket, "getfqdn", lambda name=None: fqdn)
    assert settings.host_fqdn() == expected


def test_config_without_me_uses_the_host_name(tmp_path, monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "mail.example.net")
    path = tmp_path / "q.toml"
    path.write_text("[server]\nchildren = 30\n")
    loaded = config.load(str(path))
    assert loaded.server.me == "mail.example.net" and loaded.origin["server.me"] == "default"
    path.write_text('[server]\nme = "mx.example.test"\n')
    assert config.load(str(path)).server.me == "mx.example.test"
