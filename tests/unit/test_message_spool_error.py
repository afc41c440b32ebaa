"""MessageBody keeps the OSError that stopped spooling (temp dir full, gone,
EIO) instead of raising it into the session; the engine answers 451 4.3.0.
(Live, on a full tmpfs: tests/reliability/test_temp_disk_full.py.)"""

from __future__ import annotations

from qsmtp.smtp.message import MessageBody


def test_a_failing_spool_is_recorded_and_the_rest_only_counted(tmp_path):
    body = MessageBody(spool_threshold=10, spool_dir=str(tmp_path / "gone"))
    body.write(b"Subject: x\n\n")
    body.write(b"y" * 20)  # past the threshold: the temp file cannot be made
    assert isinstance(body.spool_error, FileNotFoundError)
    body.write(b"z" * 30)
    assert body.size == len(b"Subject: x\n\n") + 50
    assert not body.spooled
    body.close()


def test_a_working_spool_has_no_error(tmp_path):
    with MessageBody(spool_threshold=10, spool_dir=str(tmp_path)) as body:
        body.write(b"Subject: x\n\n" + b"y" * 20)
        assert body.spooled and body.spool_error is None
        assert b"".join(body.iter_chunks()) == b"Subject: x\n\n" + b"y" * 20
