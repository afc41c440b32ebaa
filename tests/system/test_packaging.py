"""`make deb` and `make rpm`: what the packages hold and what their
maintainer scripts do (the .deb also runs for real in test_container.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from system.sysutil import ARTIFACTS, REPO

pytestmark = pytest.mark.system


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def kept_lintian_tags() -> set[str]:
    """The warnings packaging/README.md lists as kept, with the reason."""
    text = Path(os.path.join(REPO, "packaging", "README.md")).read_text()
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", text, re.M))


def test_lintian_reports_no_errors_and_only_documented_warnings(built_deb):
    report = Path(os.path.join(os.path.dirname(built_deb), "lintian.txt")).read_text()
    lines = [line for line in report.splitlines() if re.match(r"^[EWIXPO]: ", line)]
    assert not [line for line in lines if line.startswith("E: ")], report
    warned = {line.split()[2] for line in lines if line.startswith("W: ")}
    assert warned <= kept_lintian_tags(), ("new lintian warnings, fix them or list them in "
                                           f"packaging/README.md: {warned - kept_lintian_tags()}")


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
                 "/usr/share/man/man8/qsmtp.8.gz", "/usr/share/man/man8/qsmtpctl.8.gz"):
        assert path in files, path
    # tmpfiles.d and StateDirectory= make these, owned by qsmtp (not the payload)
    assert "/var/spool/qsmtp" not in files and "/var/lib/qsmtp" not in files
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


def kept_rpmlint_tags() -> set[str]:
    """The rpmlint warnings packaging/README.md lists as kept, with the reason."""
    text = Path(os.path.join(REPO, "packaging", "README.md")).read_text()
    table = text.split("### rpmlint warnings kept", 1)[1].split("\n\n", 2)[1]
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", table, re.M))


@pytest.fixture
def signed_rpm(built_rpm, tmp_path):
    """The RPM signed as a release is (`rpmsign --addsign`, here with a
    throwaway key), and an rpm database that knows the key: rpmlint's
    signature check then verifies it for real."""
    home = tempfile.mkdtemp(prefix="qsmtp-gpg-")  # agent socket path < 108 bytes
    gpg = ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback",
           "--passphrase", ""]
    try:
        subprocess.run(gpg + ["--quick-gen-key", "qsmtp test <qsmtp@example.org>",
                              "rsa2048", "sign", "1d"], check=True, capture_output=True,
                       timeout=120)
        rpm = str(tmp_path / os.path.basename(built_rpm))
        shutil.copy(built_rpm, rpm)
        subprocess.run(["rpmsign", "--define", f"__gpg {shutil.which('gpg')}",
                        "--define", f"_gpg_path {home}",
                        "--define", "_gpg_name qsmtp test",
                        "--define", "_gpg_sign_cmd_extra_args --pinentry-mode loopback "
                        "--passphrase ''", "--addsign", rpm],
                       check=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        key = tmp_path / "key.asc"
        key.write_bytes(subprocess.run(gpg + ["--armor", "--export", "qsmtp test"],
                                       check=True, capture_output=True).stdout)
        (tmp_path / ".rpmmacros").write_text(f"%_dbpath {tmp_path}/rpmdb\n")
        env = dict(os.environ, HOME=str(tmp_path))
        subprocess.run(["rpmkeys", "--import", str(key)], check=True, env=env,
                       capture_output=True)
        yield rpm, env
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"],
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def test_rpmlint_reports_no_errors_and_only_documented_warnings(signed_rpm):
    rpm, env = signed_rpm
    result = subprocess.run(["rpmlint", "-c", os.path.join(REPO, "packaging", "rpm",
                                                            "rpmlint.toml"), rpm],
                            capture_output=True, text=True, env=env, timeout=300)
    report = result.stdout + result.stderr
    os.makedirs(ARTIFACTS, exist_ok=True)
    with open(os.path.join(ARTIFACTS, "rpmlint.txt"), "w") as handle:
        handle.write(report)
    assert re.search(r" 0 errors, \d+ warnings", report), report
    warned = set(re.findall(r"^\S+: W: (\S+)", report, re.M))
    assert warned <= kept_rpmlint_tags(), \
        f"new rpmlint warnings, fix them or list them in packaging/README.md: " \
        f"{warned - kept_rpmlint_tags()}\n{report}"


def test_rpm_units_document_a_file_the_rpm_installs(built_rpm):
    files = set(sh("rpm", "-qpl", built_rpm).split())
    unit = subprocess.run(f"rpm2cpio {built_rpm} | cpio -i --quiet --to-stdout "
                          "./usr/lib/systemd/system/qsmtp.service", shell=True,
                          capture_output=True, text=True, check=True).stdout
    docs = re.search(r"^Documentation=(.*)$", unit, re.M).group(1).split()
    paths = [d[5:] for d in docs if d.startswith("file:")]
    assert paths and all(p in files for p in paths), (paths, docs)
    pages = [d[4:].replace("(", ".").rstrip(")") for d in docs if d.startswith("man:")]
    assert all(f"/usr/share/man/man8/{p.split('.')[0]}.8.gz" in files for p in pages), pages
