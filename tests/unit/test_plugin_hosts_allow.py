"""hosts_allow: CIDR allow/deny, longest prefix wins, qpsmtpd rule lines."""

from __future__ import annotations

import pytest

from helpers.fakes import make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.hosts_allow import HostsAllow

CONFIG = qconfig.load(None, {})


def run(ip, **opts):
    sess = make_session(CONFIG, ip=ip)
    return HostsAllow(CONFIG, "hosts_allow", opts).hook_connect(sess), sess


def test_deny_and_longest_prefix():
    opts = {"deny": ["192.0.2.0/24"], "allow": ["192.0.2.128/25"]}
    result, _ = run("192.0.2.7", **opts)
    assert result == (Result.DENY_DISCONNECT, "5.7.1 Your host is not allowed to connect")
    assert run("192.0.2.200", **opts)[0] is None
    assert run("198.51.100.1", **opts)[0] is None


def test_default_deny_is_an_allow_list_and_ipv6():
    opts = {"allow": ["2001:db8::/32"], "default": "deny"}
    assert run("2001:db8::5", **opts)[0] is None
    assert run("2001:db9::5", **opts)[0][0] is Result.DENY_DISCONNECT
    assert run("192.0.2.1", **opts)[0][0] is Result.DENY_DISCONNECT


def test_qpsmtpd_rules_and_messages():
    opts = {"rules": ["10.0.0.0/8 go away", "10.1.0.0/16 +"]}
    assert run("10.2.3.4", **opts)[0] == (Result.DENY_DISCONNECT, "5.7.1 go away")
    assert run("10.1.3.4", **opts)[0] is None


def test_whitelist_marks_allowed():
    _, sess = run("192.0.2.7", allow=["192.0.2.0/24"], whitelist=True)
    assert sess.notes["whitelisthost"] == "hosts_allow"
    _, sess = run("192.0.2.7", allow=["192.0.2.0/24"])
    assert "whitelisthost" not in sess.notes


@pytest.mark.parametrize("opts", [{"deny": ["300.1.1.1/8"]}, {"rules": ["nonsense +"]},
                                  {"default": "maybe"}, {"allow": "192.0.2.0/24"}])
def test_bad_options_fail_at_load(opts):
    with pytest.raises(PluginError):
        HostsAllow(CONFIG, "hosts_allow", opts)
