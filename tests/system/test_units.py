"""The unit files, the shipped config and the package metadata, checked
without a container (fast; not marked `system`)."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from click.testing import CliRunner

from helpers.units import UNITS, security, unit
from qsmtp.config import load
from qsmtp.ctl.cli import cli as qsmtpctl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = os.path.join(REPO, "etc", "qsmtp.toml")
MAX_EXPOSURE = 2.0


def seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


def test_security_exposure_at_most_2():
    out = security("qsmtp.service")
    match = re.search(r"Overall exposure level for qsmtp\.service: ([0-9.]+)", out.stdout)
    assert match, out.stdout + out.stderr
    assert float(match[1]) <= MAX_EXPOSURE, out.stdout


def test_sockets_hand_named_fds_to_the_service():
    smtp, submission = unit("qsmtp.socket"), unit("qsmtp-submission.socket")
    assert smtp["Socket"]["ListenStream"] == "25"
    assert smtp["Socket"]["FileDescriptorName"] == "smtp"
    assert submission["Socket"]["ListenStream"] == "587"
    assert submission["Socket"]["FileDescriptorName"] == "submission"
    for sock in (smtp, submission):
        assert sock["Socket"]["Accept"] == "no"
        assert int(sock["Socket"]["Backlog"]) >= 128
        assert sock["Socket"]["Service"] == "qsmtp.service"
        # A restart of the service must never close the listening socket.
        assert "PartOf" not in sock["Unit"] and "BindsTo" not in sock["Unit"]
        assert sock["Install"]["WantedBy"] == "sockets.target"


def test_service_contract():
    svc = unit("qsmtp.service")["Service"]
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    assert svc["ExecStart"] == "/usr/bin/qsmtp serve --config /etc/qsmtp/qsmtp.toml"
    # qsmtpctl waits for the outcome: a refused reload fails `systemctl reload`.
    assert svc["ExecReload"].startswith("+/usr/bin/qsmtpctl reload --config "
                                        "/etc/qsmtp/qsmtp.toml --no-wait-workers")
    assert svc["KillMode"] == "mixed" and svc["Restart"] == "on-failure"
    assert svc["User"] == svc["Group"] == "qsmtp"
    assert seconds(svc["WatchdogSec"]) > 0
    # Sessions get server.grace after TERM: systemd must not SIGKILL earlier.
    grace = load(SHIPPED).server.grace
    assert seconds(svc["TimeoutStopSec"]) >= grace + 5
    # The fleet signals its workers and shares a SysV registry with qsmtpctl.
    raw = Path(os.path.join(UNITS, "qsmtp.service")).read_text()
    assert not re.search(r"^PrivateIPC=yes", raw, re.M)
    denied = " ".join(re.findall(r"^SystemCallFilter=~(.*)$", raw, re.M))
    assert not {"@ipc", "@signal", "@process", "kill"} & set(denied.split()), denied
    # Socket activation only: nothing may enable the service itself.
    assert not unit("qsmtp.service").has_section("Install")


def test_shipped_config_matches_the_unit_directories():
    config, svc = load(SHIPPED), unit("qsmtp.service")["Service"]
    assert config.server.runtime_dir == "/run/" + svc["RuntimeDirectory"]
    assert config.server.state_dir == "/var/lib/" + svc["StateDirectory"]
    assert config.queue.path.startswith(svc["ReadWritePaths"] + "/")
    assert not config.server.user, "systemd starts it as qsmtp already"
    tmpfiles = Path(os.path.join(UNITS, "tmpfiles.d", "qsmtp.conf")).read_text()
    assert re.search(rf"^d {re.escape(config.queue.path)}\s+0700 qsmtp qsmtp", tmpfiles, re.M)
    sysusers = Path(os.path.join(UNITS, "sysusers.d", "qsmtp.conf")).read_text()
    assert re.search(r"^u qsmtp ", sysusers, re.M) and re.search(r"^g qsmtp ", sysusers, re.M)


def test_shipped_config_passes_config_check(tmp_path):
    # The shipped file with only its paths moved under tmp_path (the check
    # loads the plugins, which only check that the maildir can be created);
    # the file itself is checked in place inside the container
    # (test_container.py).
    text = Path(SHIPPED).read_text()
    for path in ("/run/qsmtp", "/var/lib/qsmtp", "/var/spool/qsmtp/maildir"):
        assert f'"{path}"' in text, path
        text = text.replace(f'"{path}"', f'"{tmp_path}{path}"')
    copy = tmp_path / "qsmtp.toml"
    copy.write_text(text)
    result = CliRunner().invoke(qsmtpctl, ["config", "check", str(copy)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{copy}: OK"
    assert not (tmp_path / "var/spool").exists()  # config check creates nothing


def test_shipped_config_is_no_open_relay():
    config = load(SHIPPED)
    assert config.has_section("relay"), "without [relay] the relay plugin would not run"
    for net in config.relay.clients:
        assert ipaddress.ip_network(net, strict=False).is_loopback, net
    assert config.relay.domains == []


def _debian_name(requirement: str) -> str:
    name = re.split(r"[=<>!~; \[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
    special = {"systemd-python": "python3-systemd", "pyspf": "python3-spf",
               "dkimpy": "python3-dkim"}
    return special.get(name, "python3-" + name)


def test_every_runtime_dependency_is_a_debian_depends_and_rpm_requires():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as handle:
        deps = tomllib.load(handle)["project"]["dependencies"]
    deps = [d for d in deps if "python_version < '3.11'" not in d.replace('"', "'")]
    control = Path(os.path.join(REPO, "packaging", "debian", "control")).read_text()
    depends = control.split("\nPackage: qsmtp", 1)[1].split("\nDescription:", 1)[0]
    spec = Path(os.path.join(REPO, "packaging", "rpm", "qsmtp.spec")).read_text()
    for dep in deps:
        deb = _debian_name(dep)
        assert re.search(rf"\s{re.escape(deb)}(,|$)", depends, re.M), \
            f"{dep}: add {deb} to Depends in packaging/debian/control"
        dist = re.split(r"[=<>!~; \[]", dep, maxsplit=1)[0].lower().replace("_", "-")
        assert f"Requires:       python3dist({dist})" in spec, \
            f"{dep}: add Requires: python3dist({dist}) to packaging/rpm/qsmtp.spec"


def _render_man(tmp_path, name: str) -> str:
    subprocess.run([sys.executable, os.path.join(REPO, "packaging", "manpages.py"),
                    str(tmp_path)], check=True, capture_output=True)
    return subprocess.run(["groff", "-man", "-Tutf8", "-P-cbou", str(tmp_path / f"{name}.8")],
                          capture_output=True, text=True, check=True).stdout


def test_man_pages_see_also_renders_and_names_the_others_only(tmp_path):
    for name, other in (("qsmtp", "qsmtpctl"), ("qsmtpctl", "qsmtp")):
        text = _render_man(tmp_path, name)
        see_also = text.split("\nSEE ALSO\n", 1)[1].split("\n\n", 1)[0].split()
        assert see_also[0] == f"{other}(8),", see_also
        assert f"{name}(8)," not in see_also and f"{name}(8)" not in see_also, see_also
        assert ".BR" not in text and "systemd.socket(5)," in see_also, see_also


def test_units_documentation_is_a_page_the_packages_install():
    # file: URIs are rewritten per package (.deb: README.md.gz after
    # dh_compress; the RPM keeps README.md); both ship the man pages. The
    # container test and test_packaging.py check the installed paths.
    for name in ("qsmtp.service", "qsmtp.socket", "qsmtp-submission.socket"):
        docs = unit(name)["Unit"]["Documentation"].split()
        assert "man:qsmtp(8)" in docs and "file:/usr/share/doc/qsmtp/README.md" in docs, docs
