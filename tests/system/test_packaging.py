"""`make deb` and `make rpm`: what the packages hold and what their
maintainer scripts do (the .deb also runs for real in test_container.py)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from system.sysutil import REPO

pytestmark = pytest.mark.system


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def kept_lintian_tags() -> set[str]:
    """The warnings packaging/README.md lists as kept, with the reason."""
    text = open(os.path.join(REPO, "packaging", "README.md")).read()
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", text, re.M))


def test_lintian_reports_no_errors_and_only_documented_warnings(built_deb):
    report = open(os.path.join(os.path.dirname(built_deb), "lintian.txt")).read()
    lines = [line for line in report.splitlines() if re.match(r"^[EWIXPO]: ", line)]
    assert not [line for line in lines if line.startswith("E: ")], report
    warned = {line.split()[2] for line in lines if line.startswith("W: ")}
    assert warned <= kept_lintian_tags(), \
        f"new lintian warnings, fix them or list them in packaging/README.md: {warned - kept_lintian_tags()}"


def test_deb_contents_and_conffile(built_deb):
    files = sh("dpkg-deb", "-c", built_deb)
    for path in ("./etc/qsmtp/qsmtp.toml", "./lib/systemd/system/qsmtp.service",
                 "./lib/systemd/system/qsmtp.socket",
                 "./lib/systemd/system/qsmtp-submission.socket",
                 "./lib/systemd/system/qsmtp-metrics.socket",
                 "./lib/systemd/system/qsmtp-metrics@.service",
                 "./usr/lib/sysusers.d/qsmtp.conf", "./usr/lib/tmpfiles.d/qsmtp.conf",
                 "./usr/bin/qsmtp", "./usr/bin/qsmtpctl",
                 "./usr/lib/python3/dist-packages/qsmtp/cli.py",
                 "./usr/share/bash-completion/completions/qsmtpctl",
                 "./usr/share/man/man8/qsmtp.8.gz", "./usr/share/man/man8/qsmtpctl.8.gz"):
        assert f" {path}\n" in files, path
    conffiles = subprocess.run(["sh", "-c", f"dpkg-deb --ctrl-tarfile {built_deb} | "
                                "tar -xO ./conffiles"], capture_output=True, text=True)
    assert conffiles.stdout.split() == ["/etc/qsmtp/qsmtp.toml"]


def _script(deb: str, name: str) -> str:
    return subprocess.run(["sh", "-c", f"dpkg-deb --ctrl-tarfile {deb} | tar -xO ./{name}"],
                          capture_output=True, text=True, check=True).stdout


def test_deb_enables_the_socket_not_the_service(built_deb):
    postinst = _script(built_deb, "postinst")
    assert "deb-systemd-helper enable 'qsmtp.socket'" in postinst
    assert "deb-systemd-helper enable 'qsmtp.service'" not in postinst
    assert "deb-systemd-invoke start 'qsmtp.socket'" in postinst
    # An upgrade restarts a running service but never the socket.
    assert "try-restart 'qsmtp.service'" in postinst
    assert not re.search(r"restart 'qsmtp.socket'", postinst)
    assert "systemd-sysusers" in postinst and "systemd-tmpfiles" in postinst
    prerm = _script(built_deb, "prerm")
    assert "stop qsmtp.socket qsmtp-submission.socket qsmtp-metrics.socket qsmtp.service" \
        in prerm
    assert "stop 'qsmtp.socket'" in prerm
    depends = sh("dpkg-deb", "-f", built_deb, "Depends")
    for pkg in ("python3-click", "python3-systemd", "python3-sysv-ipc",
                "python3-setproctitle", "python3-dnspython"):
        assert pkg in depends


def test_rpm_files(built_rpm):
    files = sh("rpm", "-qpl", built_rpm).split()
    for path in ("/etc/qsmtp/qsmtp.toml", "/usr/bin/qsmtp", "/usr/bin/qsmtpctl",
                 "/usr/lib/systemd/system/qsmtp.service",
                 "/usr/lib/systemd/system/qsmtp.socket",
                 "/usr/lib/systemd/system/qsmtp-submission.socket",
                 "/usr/lib/systemd/system/qsmtp-metrics.socket",
                 "/usr/lib/systemd/system/qsmtp-metrics@.service",
                 "/usr/lib/sysusers.d/qsmtp.conf", "/usr/lib/tmpfiles.d/qsmtp.conf",
                 "/var/spool/qsmtp", "/var/lib/qsmtp",
                 "/usr/share/man/man8/qsmtpctl.8"):
        assert path in files, path
    assert any(f.endswith("/site-packages/qsmtp/cli.py") for f in files)
    flags = sh("rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", built_rpm)
    assert "/etc/qsmtp/qsmtp.toml cn" in flags.splitlines(), "config(noreplace)"


def test_rpm_scriptlets(built_rpm):
    scripts = sh("rpm", "-qp", "--scripts", built_rpm)
    pre, rest = scripts.split("postinstall scriptlet", 1)
    post, rest = rest.split("preuninstall scriptlet", 1)
    preun, postun = rest.split("postuninstall scriptlet", 1)
    assert "systemd-sysusers" in pre and "u qsmtp " in pre
    assert "systemd-tmpfiles --create qsmtp.conf" in post
    assert "systemctl --no-reload preset qsmtp.socket" in post
    assert "qsmtp.service" not in post, "the service is never enabled"
    assert ("disable --now qsmtp.socket qsmtp-submission.socket qsmtp-metrics.socket "
            "qsmtp.service") in preun
    assert "try-restart qsmtp.service" in postun
    assert "try-restart qsmtp.socket" not in postun
