"""Keep sending mail for a while and count what went wrong; prints JSON.

Run on the host inside the container's network namespace (nsenter --net):
  python sender.py --port 25 --seconds 8 --threads 3
Each message is its own connection (EHLO, MAIL, RCPT, DATA, QUIT), so every
connect() and every transaction is counted: `refused` (connect failed),
`failed` (any transaction that did not end in 250 after DATA, with reasons),
`ok`. The QUIT reply is not counted (a stopping server may answer 421 there).
"""

from __future__ import annotations

import argparse
import collections
import json
import smtplib
import threading
import time
import contextlib


def one(port: int, n: int, stats: dict, lock: threading.Lock) -> None:
    try:
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    except ConnectionRefusedError:
        outcome = "refused"
    except (OSError, smtplib.SMTPException) as exc:
        outcome = f"failed: connect: {exc.__class__.__name__}: {exc}"
    else:
        try:
            client.sendmail("load@example.test", [f"rcpt{n}@example.test"],
                            f"Subject: load {n}\r\n\r\nmessage {n}\r\n".encode())
            outcome = "ok"
        except (OSError, smtplib.SMTPException) as exc:
            outcome = f"failed: {exc.__class__.__name__}: {exc}"
        with contextlib.suppress(OSError, smtplib.SMTPException):
            client.quit()
        client.close()
    with lock:
        stats[outcome] += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=3)
    args = parser.parse_args()
    stats: dict = collections.Counter()
    lock = threading.Lock()
    counter = iter(range(10**9))
    deadline = time.monotonic() + args.seconds

    def loop() -> None:
        while time.monotonic() < deadline:
            one(args.port, next(counter), stats, lock)

    threads = [threading.Thread(target=loop) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = {k: v for k, v in stats.items() if k.startswith("failed")}
    print(json.dumps({"ok": stats["ok"], "refused": stats["refused"],
                      "failed": sum(failed.values()), "failures": failed}))


if __name__ == "__main__":
    main()
