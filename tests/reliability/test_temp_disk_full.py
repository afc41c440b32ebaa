"""A full temp disk (issue 12.4): bodies over 256 KiB spool to $TMPDIR.  When
that filesystem is full the message gets 451 4.3.0, the session stays
usable, and the log says why (before: a reset and `size=0 result=closed`)."""

from __future__ import annotations

import smtplib

import pytest

from helpers.tinyfs import fill, tiny_tmpfs
from reltools import maildir_files

BIG = "Subject: big\r\n\r\n" + ("y" * 998 + "\r\n") * 2100  # ~2 MB: spooled


@pytest.fixture
def tmpdir_fs(tmp_path, monkeypatch):
    with tiny_tmpfs(tmp_path / "tmpdir", "3m", "1777") as mnt:
        monkeypatch.setenv("TMPDIR", str(mnt))  # the daemon inherits it
        yield mnt


def _send(smtp: smtplib.SMTP, text: str) -> tuple[int, bytes]:
    smtp.mail("a@outside.test")
    smtp.rcpt("user@example.test")
    try:
        return smtp.data(text)
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code, exc.smtp_error


def test_full_temp_disk_is_451_logged_and_the_session_goes_on(fleet, tmpdir_fs):
    srv = fleet(children=1, idle_children=1, allow_log=("cannot spool",))
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=20) as smtp:
        smtp.ehlo("tmpfull.test")
        # First with room: Python's tempfile settles on $TMPDIR (it falls
        # back to /tmp only when $TMPDIR is unusable at its first use).
        assert _send(smtp, BIG)[0] == 250
        filler = fill(tmpdir_fs)
        code, text = _send(smtp, BIG)
        assert (code, text[:5]) == (451, b"4.3.0"), (code, text)
        assert _send(smtp, "Subject: small\r\n\r\nhi\r\n")[0] == 250  # same session
        filler.unlink()
        assert _send(smtp, BIG)[0] == 250
    assert len(maildir_files(srv.maildir)["new"]) == 3
    log = srv.log()
    assert "cannot spool the message to the temp dir" in log
    assert "No space left on device" in log
