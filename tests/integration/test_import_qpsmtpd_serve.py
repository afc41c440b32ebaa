"""End to end: import Debian's /etc/qpsmtpd (package qpsmtpd) with
`qsmtpctl import-qpsmtpd`, start a real `qsmtp serve` on the result, and
check with smtplib that relaying and badmailfrom behave as qpsmtpd's config
said.

Debian's badmailfrom ships only comments, so the directory is copied and
one entry added (`$include` lines keep naming the installed
/etc/qpsmtpd/debian-rcpthosts and debian-queue-method).  The imported file
is used as written; the test only puts its own listen address, runtime_dir
and maildir in front (Debian's config has no [server] or [queue] of its own).
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import sys
import tomllib

QSMTPCTL = os.path.join(os.path.dirname(sys.executable), "qsmtpctl")
DEBIAN = "/etc/qpsmtpd"


def import_debian(tmp_path):
    copy = tmp_path / "qpsmtpd"
    shutil.copytree(DEBIAN, copy)
    with open(copy / "badmailfrom", "a") as handle:
        handle.write("@spammer.example  We do not take mail from spammer.example\n")
    out = tmp_path / "imported.toml"
    result = subprocess.run([QSMTPCTL, "import-qpsmtpd", str(copy), "-o", str(out)],
                            capture_output=True, text=True, timeout=60)
    # 1: Debian's rcpthosts is debconf's placeholder 'unset' and it has no queue plugin.
    assert result.returncode == 1, result.stdout + result.stderr
    assert "result: valid" in result.stdout
    return out.read_text()


def serve_imported(serve, imported: str):
    doc = tomllib.loads(imported)
    assert "server" not in doc and "queue" not in doc  # the test's keys don't clash
    srv = serve(start=False)
    srv.config_path.write_text(
        f'[server]\nlisten = ["127.0.0.1:{srv.port}"]\nruntime_dir = "{srv.runtime_dir}"\n'
        f'me = "mx.test"\nchildren = 2\nidle_children = 1\ngrace = 2\n'
        f'[queue]\npath = "{srv.maildir}"\n\n' + imported)
    return srv.start()


def rcpt(srv, source: str, sender: str, recipient: str) -> tuple[int, bytes]:
    with smtplib.SMTP(srv.host, srv.port, timeout=20, source_address=(source, 0)) as client:
        client.ehlo("client.test")
        assert client.mail(sender)[0] == 250
        return client.rcpt(recipient)


def test_debian_config_relaying_and_badmailfrom(serve, tmp_path):
    imported = import_debian(tmp_path)
    assert '"@spammer.example  We do not take mail from spammer.example",' in imported
    srv = serve_imported(serve, imported)
    # relayclients: 127.0.0.1 relays anywhere; 127.0.0.2 is not a relay client.
    assert rcpt(srv, "127.0.0.1", "a@client.test", "u@elsewhere.example")[0] == 250
    code, text = rcpt(srv, "127.0.0.2", "a@client.test", "u@elsewhere.example")
    assert (code, text[:5]) == (550, b"5.7.1")
    # rcpthosts ($include debian-rcpthosts): the domain 'unset' is ours.
    assert rcpt(srv, "127.0.0.2", "a@client.test", "u@unset")[0] == 250
    # badmailfrom: refused at RCPT with the entry's own text, for anyone.
    for source in ("127.0.0.1", "127.0.0.2"):
        code, text = rcpt(srv, source, "bad@spammer.example", "u@unset")
        assert code == 550 and b"We do not take mail from spammer.example" in text
    with smtplib.SMTP(srv.host, srv.port, timeout=20) as client:
        client.sendmail("a@client.test", ["u@unset"], b"Subject: hi\r\n\r\nbody\r\n")
    [stored] = (srv.maildir / "new").iterdir()
    assert b"Delivered-To: <u@unset>" in stored.read_bytes()
