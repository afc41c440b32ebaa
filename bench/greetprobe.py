"""Case (d) companion: open N connections at once, each runs one 5 KB
transaction; report how many were refused/failed and when the last one was
greeted (smtp-source has no per-connection timing)."""
import asyncio
import time

BODY = (b"From: <sender@example.com>\r\nTo: <rcpt@example.com>\r\n"
        b"Subject: probe\r\n\r\n" + (b"x" * 76 + b"\r\n") * 64 + b".\r\n")


async def _session(port, t0, res):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        res["refused"] += 1
        return
    try:
        line = await r.readline()
        if not line.startswith(b"220"):
            res["failed"] += 1
            return
        res["greet"].append(time.monotonic() - t0)
        while line[3:4] == b"-":
            line = await r.readline()

        async def cmd(c, want):
            w.write(c)
            await w.drain()
            while True:
                ln = await r.readline()
                if ln[3:4] != b"-":
                    break
            if not ln.startswith(want):
                raise RuntimeError(ln)
        await cmd(b"EHLO probe.example.com\r\n", b"250")
        await cmd(b"MAIL FROM:<sender@example.com>\r\n", b"250")
        await cmd(b"RCPT TO:<rcpt@example.com>\r\n", b"250")
        await cmd(b"DATA\r\n", b"354")
        await cmd(BODY, b"250")
        res["sent"] += 1
        await cmd(b"QUIT\r\n", b"221")
    except (OSError, RuntimeError, asyncio.IncompleteReadError):
        res["failed"] += 1
    finally:
        w.close()


async def _probe(port, n):
    res = {"refused": 0, "failed": 0, "sent": 0, "greet": []}
    t0 = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(_session(port, t0, res) for _ in range(n))), 120)
    g = sorted(res["greet"])
    return {"refused": res["refused"], "failed": res["failed"], "sent": res["sent"],
            "last_greet_s": g[-1] if g else None,
            "median_greet_s": g[len(g) // 2] if g else None}


def probe(port, n=200):
    return asyncio.run(_probe(port, n))
