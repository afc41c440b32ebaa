"""The supervisor's warm-up (qsmtp.warmup): a real session through the
engine over a socketpair, up to a whole DATA body, with the user's plugins
left out, nothing queued and nothing logged."""

from __future__ import annotations

import logging
import os

from protocol_harness import write_config
from qsmtp import config as qconfig
from qsmtp import warmup

# A plugin that would refuse the warm-up's client: it must not run.
DENY_LOOPBACK = '\n[[plugins]]\nname = "hosts_allow"\ndeny = ["127.0.0.0/8"]\n'


def test_a_whole_session_up_to_the_body_queues_and_logs_nothing(tmp_path, caplog):
    config = qconfig.load(write_config(tmp_path, extra=DENY_LOOPBACK))
    with caplog.at_level(logging.DEBUG):
        replies = warmup.warm_up(config)
    assert replies is not None
    # greeting, EHLO, MAIL, RCPT accepted (hosts_allow did not run), DATA began;
    # the body ended without its dot: no reply to it, nothing queued
    codes = [line[:4] for line in replies.split(b"\r\n") if line[3:4] != b"-"]
    assert codes == [b"220 ", b"250 ", b"250 ", b"250 ", b"354 ", b""]
    assert os.listdir(tmp_path / "maildir" / "new") == []
    lines = replies.count(b"\r\n")
    assert [r.getMessage().partition(" in ")[0] for r in caplog.records] == [
        f"warm-up: {lines} reply lines"]  # the warm-up's own debug line, nothing else
    assert logging.root.manager.disable == logging.NOTSET  # logging back on


def test_a_config_the_warm_up_cannot_load_costs_only_the_warm_up(tmp_path, caplog):
    config = qconfig.load(write_config(tmp_path))
    (tmp_path / "maildir").write_text("not a directory")  # the queue cannot load
    with caplog.at_level(logging.DEBUG):
        assert warmup.warm_up(config) is None
    assert "warm-up skipped: " in caplog.text
    assert logging.root.manager.disable == logging.NOTSET
