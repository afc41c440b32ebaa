"""The open-relay matrix (relay_matrix.tsv, shared with tests/unit/test_relay.py)
replayed against a LIVE server: outsiders connect from 127.0.0.2, relay
clients from 127.0.0.1 (the only relay network).  Never 250 where the table
says refuse; 250 where it says accept."""

from __future__ import annotations

from reltools import HERE, RELAY_TOML, TALLY, Raw, code

MATRIX = HERE / "relay_matrix.tsv"
SOURCE = {"relay": "127.0.0.1", "outsider": "127.0.0.2"}


def rows():
    for text in MATRIX.read_text(encoding="utf-8").splitlines():
        if text and not text.startswith("#"):
            client, rcpt, expect, why = text.split("\t")
            yield client, rcpt, expect, why


def test_relay_matrix_live(fleet):
    cases = list(rows())
    assert len(cases) >= 40
    srv = fleet(children=4, idle_children=2, max_from_ip=0, extra_toml=RELAY_TOML)
    wrong, refused = [], 0
    for client, rcpt, expect, why in cases:
        with Raw(srv.port, source=SOURCE[client]) as smtp:
            assert code(smtp.reply()) == 220
            assert code(smtp.cmd("EHLO relay.test")) == 250
            assert code(smtp.cmd("MAIL FROM:<sender@outside.test>")) == 250
            reply = smtp.cmd(b"RCPT TO:" + rcpt.encode("utf-8") + b"\r\n")
            smtp.cmd("QUIT")
        got = "accept" if code(reply) in (250, 251) else "refuse"
        if got == "refuse":
            refused += 1
            assert 400 <= code(reply) < 600, reply
        if got != expect:
            wrong.append(f"{client} {rcpt} ({why}): {reply!r}")
    assert wrong == [], "\n".join(wrong)
    TALLY.add("relay.cases", len(cases))
    TALLY.add("relay.refused", refused)
    print(f"\nrelay matrix: {len(cases)} cases live, {refused} refused, 0 wrong")
