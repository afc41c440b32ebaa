"""Keep sending mail for a while and count what went wrong; prints JSON.

Run on the host inside the container's network namespace (nsenter --net):
  python sender.py --port 25 --seconds 8 --threads 3
Each message is its own connection (EHLO, MAIL, RCPT, DATA, QUIT), so every
connect() and every transaction is counted: `refused` (connect failed),
`failed` (any transaction that did not end in 250 after DATA, with reasons),
`ok`. The QUIT reply is not counted (a stopping server may answer 421 there).
`codes` counts the failures by the reply code that ended them ("closed"
when the server dropped the connection without one); `--events` adds every
connection as [unix time it ended, outcome] ("ok", "refused", a code).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import smtplib
import threading
import time


def _code(exc: Exception) -> str:
    """The reply code that ended a failed transaction, or "closed"."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return str(next(iter(exc.recipients.values()))[0])
    code = getattr(exc, "smtp_code", None)
    return str(code) if isinstance(code, int) and code > 0 else "closed"


def one(port: int, n: int, stats: dict, codes: dict, events: list,
        lock: threading.Lock) -> str:
    code = "ok"
    try:
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    except ConnectionRefusedError:
        outcome = code = "refused"
    except (OSError, smtplib.SMTPException) as exc:
        outcome, code = f"failed: connect: {exc.__class__.__name__}: {exc}", _code(exc)
    else:
        try:
            # EHLO on its own, as an MTA does: a 421 there is a deferral.
            # (sendmail() would answer a failed EHLO with HELO on a socket
            # the server has already closed, and report "not connected".)
            ehlo_code, ehlo_msg = client.ehlo()
            if not 200 <= ehlo_code <= 299:
                raise smtplib.SMTPHeloError(ehlo_code, ehlo_msg)
            client.sendmail("load@example.test", [f"rcpt{n}@example.test"],
                            f"Subject: load {n}\r\n\r\nmessage {n}\r\n".encode())
            outcome = "ok"
        except (OSError, smtplib.SMTPException) as exc:
            outcome, code = f"failed: {exc.__class__.__name__}: {exc}", _code(exc)
        with contextlib.suppress(OSError, smtplib.SMTPException):
            client.quit()
        client.close()
    with lock:
        stats[outcome] += 1
        if outcome.startswith("failed"):
            codes[code] += 1
        events.append([round(time.time(), 3), code])
    return code


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--events", action="store_true")
    # A real MTA waits before it retries a 4xx; without a pause the loop
    # would spin on instant 421s and starve the machine it measures.
    parser.add_argument("--retry-pause", type=float, default=0.0)
    args = parser.parse_args()
    stats: dict = collections.Counter()
    codes: dict = collections.Counter()
    events: list = []
    lock = threading.Lock()
    counter = iter(range(10**9))
    deadline = time.monotonic() + args.seconds

    def loop() -> None:
        while time.monotonic() < deadline:
            code = one(args.port, next(counter), stats, codes, events, lock)
            if args.retry_pause and code != "ok":
                time.sleep(args.retry_pause)

    threads = [threading.Thread(target=loop) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = {k: v for k, v in stats.items() if k.startswith("failed")}
    report = {"ok": stats["ok"], "refused": stats["refused"],
              "failed": sum(failed.values()), "failures": failed, "codes": codes}
    if args.events:
        report["events"] = sorted(events)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
