"""qpsmtpd config -> qsmtp TOML: upstream's config.sample (tests/unit/data),
plugin lines with their arguments, relay prefixes, the prefork flags, the
writer's TOML.  Every plugin table the importer writes must pass the same
validation as `qsmtpctl config check`."""

from __future__ import annotations

import pathlib
import tomllib

import pytest

from qsmtp.config import ConfigError
from qsmtp.ctl.configcmd import validate
from qsmtp.ctl.importer.convert import translate
from qsmtp.ctl.importer.mapping import relay_network
from qsmtp.ctl.importer.model import Translation
from qsmtp.ctl.importer.writer import render, value

SAMPLE = pathlib.Path(__file__).parent / "data" / "qpsmtpd-config.sample"


def toml_of(t: Translation, tmp_path) -> dict:
    path = tmp_path / "out.toml"
    path.write_text(render(t, "test"))
    return tomllib.loads(path.read_text())


def check(t: Translation, tmp_path) -> None:
    """config check's validation of the rendered file, maildir in tmp_path."""
    path = tmp_path / "checked.toml"
    path.write_text(render(t, "test"))
    validate(str(path), {"queue.path": str(tmp_path / "maildir"),
                         "server.state_dir": str(tmp_path / "state")})


def qpsmtpd_dir(tmp_path, **files) -> str:
    directory = tmp_path / "qp"
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return str(directory)


def test_upstream_config_sample(tmp_path):
    t = translate(str(SAMPLE))
    doc = toml_of(t, tmp_path)
    assert doc["server"] == {"me": "mx.example.com", "databytes": 52428800}
    assert doc["relay"]["clients"] == ["127.0.0.1/32", "192.0.0.0/16", "2001:db80::/28",
                                       "2001:db8::1/128", "::1/128"]
    assert doc["relay"]["domains"] == ["mx.example.com", "example.com", ".example.net",
                                       "example.org"]  # .hidden not included
    assert doc["queue"] == {"backend": "maildir", "path": "/home/spamtrap/mail"}
    assert [p["name"] for p in doc["plugins"]] == [
        "hosts_allow", "earlytalker", "count_unrecognized_commands", "resolvable_fromhost",
        "rhsbl", "dnsbl", "badmailfrom", "badrcptto", "helo", "auth/file", "spamassassin"]
    plugins = {p["name"]: p for p in doc["plugins"]}
    assert plugins["badmailfrom"]["entries"] == [
        "badmailexample@microsoft.com", "@www.yahoo.com  yahoo never sends from www"]
    assert plugins["dnsbl"]["zones"][0] == "rbl.mail-abuse.org"
    assert plugins["dnsbl"]["allow"] == ["192.168.99.5"]
    assert plugins["rhsbl"]["zones"] == [{"zone": "dsn.rfc-ignorant.org", "message":
                                          "does not accept bounces. This violates RFC "
                                          "821/2505/2821 http://www.rfc-ignorant.org/"}]
    assert plugins["count_unrecognized_commands"]["count"] == 4
    dropped = "\n".join(t.dropped)
    for name in ("dont_require_anglebrackets", "quit_fortune", "virus/klez_filter",
                 "check_relay", "rcpt_ok", "badrcptto_patterns"):
        assert name in dropped
    human = "\n".join(t.human)
    assert "good@example.com, bad@example.com" in human and "qsmtpctl user add" in human
    assert "2001:DB8" in human


def test_passwords_never_leave_flat_auth_pw(tmp_path):
    t = translate(str(SAMPLE))
    everything = render(t, "x") + "\n".join(t.carried + t.dropped + t.human)
    assert "good_pass" not in everything and "bad_pass" not in everything


def test_every_line_has_its_origin(tmp_path):
    text = render(translate(str(SAMPLE)), "x")
    for line in text.splitlines():
        if line and not line.startswith(("#", "[", "name = ", "]")):
            assert f"# {SAMPLE}" in line or "# qpsmtpd's relay plugin" in line \
                or line.rstrip().endswith("morercpthosts") \
                or line.rstrip().endswith("morerelayclients"), line


PLUGIN_LINES = """
hosts_allow
check_earlytalker wait 3 action log defer-reject 1
count_unrecognized_commands 6
helo policy rfc reject naughty
fcrdns reject 0
dnsbl reject 1 reject_type temp
rhsbl reject naughty
check_badmailfrom reject 1 reject_type disconnect
check_badmailfrom_patterns
badrcptto
resolvable_fromhost reject 1 reject_type temp
naughty reject data reject_type temp
karma negative 2 penalty_days 3 reject naughty
greylisting black_timeout 60 grey_timeout 600 sender 1 recipient 0 db_dir /var/lib/gl
sender_permitted_from reject 3
dkim reject 1
dmarc reject 0
spamassassin reject_threshold 12 spamd_user spamd leave_old_headers drop spamd_socket /run/spamd.s
virus/clamdscan clamd_socket 127.0.0.1:3310 max_size 2048 defer_on_error 0
headers days 5 reject 0
loop 40
domainkeys
uribl
logging/syslog loglevel LOGINFO
queue/smtp-forward 127.0.0.1 10025
"""


def test_plugin_arguments_map_to_options_that_validate(tmp_path):
    directory = qpsmtpd_dir(
        tmp_path, plugins=PLUGIN_LINES, dnsbl_zones="zen.example:127.0.0.2\n",
        rhsbl_zones="dbl.example\n", badmailfrom="@spam.example\n^x.*@y\\.example$ bye\n",
        badmailfrom_patterns="^bounce-.*@ VERP\n", hosts_allow="192.0.2.0/24 go away\n",
        badrcptto="closed@example.com\n", badhelo="aol.com\n^\\d+\\.\n",
        denysoft_greylist="white_timeout 86400\n")
    t = translate(directory)
    check(t, tmp_path)  # every option name, type and choice is one qsmtp accepts
    plugins = {p["name"]: p for p in toml_of(t, tmp_path)["plugins"]}
    assert plugins["earlytalker"] == {"name": "earlytalker", "action": "note",
                                      "wait": 3.0, "defer_reject": True}
    assert plugins["helo"]["policy"] == "rfc" and plugins["helo"]["action"] == "naughty"
    assert plugins["helo"]["bad_helo"] == ["aol.com"]
    assert plugins["helo"]["bad_helo_patterns"] == ["^\\d+\\."]
    assert plugins["fcrdns"]["action"] == "note"
    assert plugins["dnsbl"]["action"] == "denysoft"
    assert plugins["dnsbl"]["zones"] == [{"zone": "zen.example", "match": ["127.0.0.2"]}]
    assert plugins["badmailfrom"]["action"] == "deny_disconnect"
    assert plugins["badmailfrom"]["entries"] == ["@spam.example"]
    assert plugins["badmailfrom"]["patterns"] == ["^x.*@y\\.example$ bye", "^bounce-.*@ VERP"]
    assert plugins["naughty"] == {"name": "naughty", "reject": "data", "reject_type": "temp"}
    assert plugins["karma"]["negative"] == 2 and plugins["karma"]["action"] == "naughty"
    assert plugins["greylisting"]["db_path"] == "/var/lib/gl/greylisting.sqlite"
    assert plugins["greylisting"]["recipient"] is False
    assert plugins["greylisting"]["white_timeout"] == 86400
    assert plugins["spf"]["fail_action"] == "deny"
    assert plugins["spf"]["softfail_action"] == "denysoft"
    assert plugins["dmarc"]["reject_action"] == "note"
    assert plugins["spamassassin"]["reject_score"] == 12
    assert plugins["spamassassin"]["address"] == "unix:/run/spamd.s"
    assert plugins["spamassassin"]["old_headers"] == "drop"
    assert plugins["clamav"] == {"name": "clamav", "address": "127.0.0.1:3310",
                                 "max_size": 2048 * 1024, "on_error": "pass"}
    assert plugins["basicheaders"]["past_days"] == 5
    assert plugins["loop"]["max_hops"] == 40
    assert t.keys["queue.upstream"].value == "127.0.0.1:10025"
    dropped = "\n".join(t.dropped)
    assert "domainkeys: DomainKeys is obsolete" in dropped
    assert "uribl: qsmtp has no URI blocklist plugin" in dropped
    assert "logging/syslog" in dropped
    assert t.human == []


@pytest.mark.parametrize("line, wanted", [
    ("queue/postfix-queue /var/spool/postfix/public/cleanup", "local MTA's spool"),
    ("queue/qmail-queue /var/qmail/bin/qmail-queue", "local MTA's spool"),
    ("auth/auth_vpopmaild", "checkpassword program"),
    ("some_local_plugin arg", "no qsmtp counterpart"),
])
def test_what_needs_a_human(tmp_path, line, wanted):
    t = translate(qpsmtpd_dir(tmp_path, plugins=f"{line}\nqueue/maildir /tmp/x\n"))
    assert wanted in "\n".join(t.human)


def test_no_plugins_and_no_queue_need_a_human(tmp_path):
    t = translate(qpsmtpd_dir(tmp_path, me="mx.example\n"))
    assert any("no plugin list" in item for item in t.human)
    assert any("no queue plugin" in item for item in t.human)


@pytest.mark.parametrize("entry, network", [
    ("192.168.", "192.168.0.0/16"), ("10.", "10.0.0.0/8"), ("127.0.0.1", "127.0.0.1/32"),
    ("10.1.0.0/24", "10.1.0.0/24"), ("2001:0db8:", "2001:db8::/32"),
    ("2001:0db8:a", "2001:db8:a000::/36"), ("2001:db8::1", "2001:db8::1/128"),
    ("example.com", None), ("192.168.300.", None), ("2001:db8:x", None),
])
def test_relay_prefixes_become_cidrs(entry, network):
    assert relay_network(entry) == network


def test_bad_numbers_and_databytes_zero(tmp_path):
    t = translate(qpsmtpd_dir(tmp_path, databytes="0\n", timeoutsmtpd="soon\n",
                              timeout="60\n", plugins="queue/maildir /tmp/m\n"))
    assert "server.databytes" not in t.keys
    assert any("databytes 0" in item for item in t.dropped)
    assert any("'soon' is not a number" in item for item in t.human)
    t = translate(qpsmtpd_dir(tmp_path / "b", timeout="60\n", loglevel="LOGDEBUG\n",
                              plugins="queue/maildir /tmp/m\n"))
    assert t.keys["server.timeout"].value == 60 and t.keys["server.debug"].value is True


def test_prefork_flags_from_debian_defaults_and_systemd_unit(tmp_path):
    directory = qpsmtpd_dir(tmp_path, plugins="queue/maildir /tmp/m\n")
    debconf = ('ENABLED="true"\nSERVER="prefork"\nPORT="2525"\nRUNAS="nobody"\n'
               'INTERFACES="127.0.0.1 [::1]:2526"\n'
               'EXTRA_ARGS="--children 20 --idle-children 4 -m 3 --pretty-child --detach"\n')
    t = translate(directory, ("/etc/default/qpsmtpd", debconf))
    keys = {key: item.value for key, item in t.keys.items() if key.startswith("server.")}
    assert keys == {"server.port": 2525, "server.user": "nobody",
                    "server.listen": ["127.0.0.1", "[::1]:2526"], "server.children": 20,
                    "server.idle_children": 4, "server.max_from_ip": 3,
                    "server.pretty_child": True}
    assert t.keys["server.children"].origin == "/etc/default/qpsmtpd:6"
    assert any("--detach" in item for item in t.dropped)
    check(t, tmp_path)
    unit = ("[Service]\nExecStart=/usr/bin/qpsmtpd-prefork --port 25 --children=8 "
            "--bogus\n")
    t = translate(directory, ("qpsmtpd.service", unit))
    assert t.keys["server.children"].value == 8
    assert any("--bogus" in item for item in t.human)


@pytest.mark.parametrize("text", ["tab\there", 'quote " and \\ backslash', "del \x7f",
                                  "ünïcødé ✓", "bell \x07", "new\nline"])
def test_writer_strings_round_trip(text):
    assert tomllib.loads(f"k = {value(text)}")["k"] == text


def test_invalid_result_is_a_config_error(tmp_path):
    t = translate(qpsmtpd_dir(tmp_path, plugins="queue/maildir /tmp/m\n",
                              relayclients="10.\n"))
    t.set("server.timeout", 0, "test")
    with pytest.raises(ConfigError, match="server.timeout"):
        check(t, tmp_path)


def test_files_no_listed_plugin_reads_are_dropped(tmp_path):
    t = translate(qpsmtpd_dir(tmp_path, plugins="queue/maildir /tmp/m\n",
                              badhelo="aol.com\n", dnsbl_zones="zen.example\n"))
    dropped = "\n".join(t.dropped)
    assert "badhelo: read by helo or check_spamhelo, which config/plugins" in dropped
    assert "dnsbl_zones: read by dnsbl" in dropped
    assert t.plugins == []
