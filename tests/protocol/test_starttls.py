"""STARTTLS over real loopback sockets (stdlib ssl, self-signed cert)."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from helpers.tls import make_cert
from protocol_harness import Client, Server, write_config


@pytest.fixture(scope="session")
def cert(tmp_path_factory):
    cert, key = make_cert(tmp_path_factory.mktemp("tls"))
    return str(cert), str(key)


@pytest.fixture()
def server(tmp_path, cert):
    srv = Server(write_config(tmp_path, {"tls.cert": f'"{cert[0]}"',
                                         "tls.key": f'"{cert[1]}"'}))
    yield srv
    srv.close()


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def ehlo(client: Client, name: str = "client.test") -> list[bytes]:
    client.send(f"EHLO {name}\r\n".encode())
    return client.reply()


def test_smtplib_starttls_and_send(server, tmp_path):
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("starttls")
        code, _ = smtp.starttls(context=client_context())
        assert code == 220
        smtp.ehlo("client.test")
        assert not smtp.has_extn("starttls")
        smtp.sendmail("a@client.test", ["u@example.test"], b"Subject: tls\r\n\r\nhi\r\n")
    summary = server.wait_session()
    assert summary.messages == 1
    stored = server.maildir_files(tmp_path)[0].read_bytes()
    assert b"with ESMTPS (using TLSv1." in stored
    assert stored.endswith(b"Subject: tls\n\nhi\n")


def test_large_message_over_tls_arrives_whole(tmp_path, cert):
    """The Reader's socket is non-blocking: a message of many TLS records
    (and records split across reads) goes through its want-read waits."""
    srv = Server(write_config(tmp_path, {"tls.cert": f'"{cert[0]}"', "tls.key": f'"{cert[1]}"',
                                         "server.databytes": "4000000"}))
    try:
        body = b"".join(b"%06d " % i + b"x" * 70 + b"\r\n" for i in range(40000))  # ~3 MB
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=20) as smtp:
            smtp.starttls(context=client_context())
            smtp.sendmail("a@client.test", ["u@example.test"], b"Subject: big\r\n\r\n" + body)
        assert srv.wait_session().messages == 1
        stored = srv.maildir_files(tmp_path)[0].read_bytes()
        assert stored.endswith(b"Subject: big\n\n" + body.replace(b"\r\n", b"\n"))
    finally:
        srv.close()


def test_plaintext_pipelined_after_starttls_is_discarded(server):
    client = Client(server.port)
    assert client.reply()[0].startswith(b"220 ")
    ehlo(client)
    client.send(b"STARTTLS\r\nMAIL FROM:<evil@attacker.test>\r\nRCPT TO:<u@example.test>\r\n")
    assert client.reply() == [b"220 2.0.0 Ready to start TLS"]
    assert client.buf == b""
    client.sock = client_context().wrap_socket(client.sock)
    # The injected MAIL never ran and the EHLO was forgotten.
    client.send(b"RCPT TO:<u@example.test>\r\n")
    assert client.reply()[0].startswith(b"503 5.5.1")
    client.send(b"MAIL FROM:<a@client.test>\r\n")
    assert client.reply()[0].startswith(b"503 5.5.1")
    lines = ehlo(client)
    assert b"250-STARTTLS" not in lines and b"250 STARTTLS" not in lines
    client.send(b"STARTTLS\r\n")
    assert client.reply()[0].startswith(b"503 5.5.1")
    client.send(b"MAIL FROM:<a@client.test>\r\nQUIT\r\n")
    assert client.reply()[0].startswith(b"250 2.1.0")
    assert client.reply()[0].startswith(b"221 ")
    client.close()
    assert server.wait_session().result == "closed"


def test_starttls_with_arguments_is_refused(server):
    client = Client(server.port)
    client.reply()
    ehlo(client)
    client.send(b"STARTTLS now\r\n")
    assert client.reply()[0].startswith(b"501 5.5.4")
    client.close()


def test_failed_handshake_closes_silently(server):
    client = Client(server.port)
    client.reply()
    ehlo(client)
    client.send(b"STARTTLS\r\n")
    assert client.reply()[0].startswith(b"220 2.0.0")
    client.send(b"this is not a TLS ClientHello\r\n" * 20)
    assert client.line() is None
    client.close()
    assert server.wait_session().result == "closed"


def test_starttls_not_offered_without_cert(tmp_path):
    srv = Server(write_config(tmp_path))
    try:
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as smtp:
            smtp.ehlo("client.test")
            assert not smtp.has_extn("starttls")
            assert smtp.docmd("STARTTLS")[0] == 502
    finally:
        srv.close()
