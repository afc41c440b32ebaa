"""SMTP AUTH end to end: a real `qsmtp serve` with STARTTLS, the auth/file
backend edited by the real `qsmtpctl user`, smtplib and swaks as clients,
the failure counter across connections, a plaintext-trusted port, and the
auth/checkpassword backend running a real checkpassword program."""

from __future__ import annotations

import base64
import pathlib
import smtplib
import ssl
import subprocess
import sys
import time

import pytest

from helpers.server import free_port
from helpers.tls import make_cert

QSMTPCTL = str(pathlib.Path(sys.executable).with_name("qsmtpctl"))
PASSWORD = "correct horse battery"  # smtplib only sends ASCII
PLAIN = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    cert, key = make_cert(tmp_path_factory.mktemp("tls"))
    return cert, key


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def ctl(*args: str, password: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([QSMTPCTL, *args], input=password and password + "\n",
                          capture_output=True, text=True, timeout=30)


def add_user(path, user: str, password: str) -> None:
    res = ctl("user", "add", user, "--file", str(path), "--password-stdin", "--cost", "12",
              password=password)
    assert res.returncode == 0, res.stderr


def toml(cert, backend: str, auth: str = "") -> str:
    if "failure_delay" not in auth:
        auth += "\nfailure_delay = 0"
    return (f'[relay]\nclients = []\ndomains = ["example.test"]\n'
            f'[tls]\ncert = "{cert[0]}"\nkey = "{cert[1]}"\n'
            f"[auth]\n{auth}\n[[plugins]]\n{backend}\n")


def start(serve, tmp_path, cert, backend: str, auth: str = "", **kwargs):
    return serve(extra_toml=toml(cert, backend, auth), state_dir=str(tmp_path / "state"),
                 **kwargs)


def tls_session(srv, source: str = "127.0.0.1") -> smtplib.SMTP:
    smtp = smtplib.SMTP(srv.host, srv.port, timeout=20, source_address=(source, 0))
    smtp.ehlo("client.test")
    smtp.starttls(context=tls_context())
    smtp.ehlo("client.test")
    return smtp


def swaks(srv, mechanism: str, password: str, user: str = "alice") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["swaks", "--server", f"{srv.host}:{srv.port}", "--tls", "--auth", mechanism,
         "--auth-user", user, "--auth-password", password, "--from", "a@client.test",
         "--to", "u@foreign.test", "--h-Subject", f"swaks {mechanism}", "--timeout", "20"],
        capture_output=True, text=True, timeout=60)


def test_auth_over_starttls(serve, tmp_path, cert):
    users = tmp_path / "users"
    add_user(users, "alice", PASSWORD)
    srv = start(serve, tmp_path, cert, f'name = "auth/file"\npath = "{users}"',
                flags=["--debug"])
    with smtplib.SMTP(srv.host, srv.port, timeout=20) as smtp:  # no TLS yet
        smtp.ehlo("client.test")
        assert not smtp.has_extn("auth")
        assert smtp.docmd("AUTH", f"PLAIN {PLAIN}")[0] == 538
    with tls_session(srv) as smtp:  # TLS but not authenticated: no relaying
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        smtp.mail("a@client.test")
        code, text = smtp.rcpt("u@foreign.test")
        assert (code, text[:5]) == (550, b"5.7.1")
        smtp.rset()
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            smtp.login("alice", "wrong password")
        assert err.value.smtp_code == 535 and err.value.smtp_error.startswith(b"5.7.8")
    with tls_session(srv) as smtp:  # smtplib picks PLAIN
        assert smtp.login("alice", PASSWORD)[0] == 235
        assert smtp.sendmail("a@client.test", ["u@foreign.test"],
                             b"Subject: smtplib plain\r\n\r\nhi\r\n") == {}
    with tls_session(srv) as smtp:
        smtp.user, smtp.password = "alice", PASSWORD
        assert smtp.auth("LOGIN", smtp.auth_login)[0] == 235
        smtp.sendmail("a@client.test", ["u@foreign.test"], b"Subject: smtplib login\r\n\r\nhi\r\n")
    for mechanism in ("PLAIN", "LOGIN"):
        res = swaks(srv, mechanism, PASSWORD)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "<~  235 2.7.0 Authentication successful" in res.stdout
    res = swaks(srv, "LOGIN", "not it")
    assert res.returncode != 0 and "<~* 535 5.7.8" in res.stdout

    stored = sorted((srv.maildir / "new").iterdir())
    assert len(stored) == 4
    subjects = set()
    for path in stored:
        text = path.read_text()
        assert "with ESMTPSA" in text and "Delivered-To: <u@foreign.test>" in text
        subjects.add(text.split("Subject: ", 1)[1].split("\n", 1)[0])
    assert subjects == {"smtplib plain", "smtplib login", "swaks PLAIN", "swaks LOGIN"}

    log = srv.log()
    assert "AUTH PLAIN [credentials not logged]" in log  # the debug log has command lines
    assert "authenticated as 'alice'" in log
    secrets = [PASSWORD, "not it", "wrong password", PLAIN,
               base64.b64encode(PASSWORD.encode()).decode(),
               base64.b64encode(b"not it").decode(),
               base64.b64encode(b"\0alice\0wrong password").decode()]
    leaked = [s for s in secrets if s in log]
    assert not leaked, f"credentials in the log: {leaked}"


def test_failed_attempts_limited_per_ip_across_connections(serve, tmp_path, cert):
    users = tmp_path / "users"
    add_user(users, "alice", PASSWORD)
    srv = start(serve, tmp_path, cert, f'name = "auth/file"\npath = "{users}"',
                auth="max_failures = 3\nfailure_window = 600\nfailure_delay = 1",
                children=3, idle_children=3)
    for _ in range(3):  # one connection each: the count is shared, not per session
        with tls_session(srv) as smtp:
            started = time.monotonic()
            # (smtp.login would try PLAIN, then LOGIN: two attempts)
            smtp.user, smtp.password = "alice", "guess"
            with pytest.raises(smtplib.SMTPAuthenticationError):
                smtp.auth("PLAIN", smtp.auth_plain)
            assert time.monotonic() - started >= 1.0  # failure_delay
    with tls_session(srv) as smtp:  # even the right password is not tried now
        code, text = smtp.docmd("AUTH", f"PLAIN {PLAIN}")
        assert (code, text[:5]) == (421, b"4.7.0")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()
    with tls_session(srv, source="127.0.0.2") as smtp:  # another client IP is fine
        assert smtp.login("alice", PASSWORD)[0] == 235
    assert srv.log().count("AUTH refused, 127.0.0.1 is over the failed-attempt limit") == 1


def test_plaintext_service_is_trusted(serve, tmp_path, cert):
    users = tmp_path / "users"
    add_user(users, "alice", PASSWORD)
    plain, trusted = free_port(), free_port()
    srv = start(serve, tmp_path, cert, f'name = "auth/file"\npath = "{users}"',
                auth=f'plaintext_services = [":{trusted}"]',
                listen=[f"127.0.0.1:{plain}", f"127.0.0.1:{trusted}"])
    with smtplib.SMTP(srv.host, plain, timeout=20) as smtp:
        smtp.ehlo("client.test")
        assert not smtp.has_extn("auth")
    with smtplib.SMTP(srv.host, trusted, timeout=20) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("auth") and smtp.login("alice", PASSWORD)[0] == 235
        smtp.sendmail("a@client.test", ["u@foreign.test"], b"Subject: port\r\n\r\nhi\r\n")
        # STARTTLS forgets the authentication (RFC 3207 4.2): no relaying
        # until AUTH again, which is offered again.
        smtp.starttls(context=tls_context())
        smtp.ehlo("client.test")
        assert smtp.has_extn("auth")
        smtp.mail("a@client.test")
        assert smtp.rcpt("u@foreign.test")[0] == 550
    with smtplib.SMTP(srv.host, trusted, timeout=20) as smtp:  # a new connection: nobody
        smtp.ehlo("client.test")
        smtp.mail("a@client.test")
        assert smtp.rcpt("u@foreign.test")[0] == 550
    stored = [p.read_text() for p in (srv.maildir / "new").iterdir()]
    assert len(stored) == 1 and "with ESMTPA" in stored[0]


def test_qsmtpctl_user_round_trip_on_a_running_server(serve, tmp_path, cert):
    users = tmp_path / "users"
    add_user(users, "bob", "first")
    srv = start(serve, tmp_path, cert, f'name = "auth/file"\npath = "{users}"')
    config = str(srv.config_path)

    def login(user: str, password: str) -> int:
        with tls_session(srv) as smtp:
            try:
                return smtp.login(user, password)[0]
            except smtplib.SMTPAuthenticationError as exc:
                return exc.smtp_code

    assert login("bob", "first") == 235
    res = ctl("--config", config, "user", "add", "carol", "--password-stdin", "--cost", "12",
              password="c-pass")
    assert res.returncode == 0, res.stderr
    assert login("carol", "c-pass") == 235  # picked up without a reload
    res = ctl("user", "passwd", "bob", "--config", config, "--password-stdin", "--cost", "12",
              password="second")
    assert res.returncode == 0, res.stderr
    assert (login("bob", "first"), login("bob", "second")) == (535, 235)
    assert ctl("user", "del", "bob", "--config", config).returncode == 0
    assert login("bob", "second") == 535
    assert ctl("user", "list", "--config", config).stdout == "carol\n"


CHECKPASSWORD = """#!{python}
import os, sys
data = b""
while True:
    chunk = os.read(3, 4096)
    if not chunk:
        break
    data += chunk
user, password, _stamp, _ = data.split(b"\\0")
if (user, password) == (b"dave", b"d4ve-pw"):
    os.execv(sys.argv[1], sys.argv[1:])
sys.exit(1)
"""


def test_checkpassword_backend(serve, tmp_path, cert):
    program = tmp_path / "checkpassword"
    program.write_text(CHECKPASSWORD.format(python=sys.executable))
    program.chmod(0o755)
    srv = start(serve, tmp_path, cert,
                f'name = "auth/checkpassword"\nprogram = "{program}"\nargs = ["/bin/true"]')
    res = swaks(srv, "LOGIN", "d4ve-pw", user="dave")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "<~  235 2.7.0" in res.stdout
    res = swaks(srv, "PLAIN", "nope", user="dave")
    assert res.returncode != 0 and "<~* 535 5.7.8" in res.stdout
    assert len(list((srv.maildir / "new").iterdir())) == 1
