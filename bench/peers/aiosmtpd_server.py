"""The aiosmtpd peer: accept from 127.0.0.1, store each message as a maildir
file (LF line ends, Return-Path + Delivered-To), fsync, rename into new/,
fsync new/ (the rename durable too, as qsmtp and the Haraka peer do), then 250."""
import argparse
import asyncio
import os
import socket
import time

from aiosmtpd.smtp import SMTP

HOST = "bench.example.test"
_count = 0


class MaildirHandler:
    def __init__(self, path):
        self.path = path
        for d in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(path, d), exist_ok=True)

    async def handle_DATA(self, server, session, envelope):
        global _count
        _count += 1
        name = f"{int(time.time())}.P{os.getpid()}Q{_count}.{HOST}"
        head = f"Return-Path: <{envelope.mail_from}>\n"
        head += "".join(f"Delivered-To: {r}\n" for r in envelope.rcpt_tos)
        body = envelope.original_content.replace(b"\r\n", b"\n")
        tmp = os.path.join(self.path, "tmp", name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, head.encode() + body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(self.path, "new", name))
        dfd = os.open(os.path.join(self.path, "new"), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return "250 2.0.0 Ok: queued"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--maildir", required=True)
    a = ap.parse_args()
    handler = MaildirHandler(a.maildir)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # hostname given: aiosmtpd would otherwise call socket.getfqdn() (DNS).
    srv = loop.run_until_complete(loop.create_server(
        lambda: SMTP(handler, hostname=HOST, data_size_limit=26214400),
        host="127.0.0.1", port=a.port, backlog=1024,
        family=socket.AF_INET, reuse_address=True))
    try:
        loop.run_forever()
    finally:
        srv.close()


if __name__ == "__main__":
    main()
