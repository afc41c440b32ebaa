"""A private redis-server for the state tests: its own directory, a free
loopback port, no persistence (no RDB, no AOF), stopped by PID.

    with RedisServer(tmp_path) as redis:
        redis.url                 # redis://127.0.0.1:PORT/0
        redis.stop(); redis.start()   # the same port again (outage tests)
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from helpers.daemon import PrivateDaemon, ask
from helpers.server import free_port

REDIS_SERVER = "/usr/bin/redis-server"


class RedisServer(PrivateDaemon):
    def __init__(self, tmp_path: Path, host: str = "127.0.0.1"):
        self.dir = Path(tmp_path) / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host, self.port = host, free_port(host)
        self.log_path = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        conf = self.dir / "redis.conf"
        conf.write_text("\n".join([
            f"bind {self.host}", f"port {self.port}", f"dir {self.dir}",
            'save ""', "appendonly no", "daemonize no", "protected-mode yes",
            f"logfile {self.log_path}", "databases 2", ""]))
        self.proc = subprocess.Popen([REDIS_SERVER, str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.terminate()
                raise RuntimeError(f"redis-server did not start:\n{self.log()}")
            time.sleep(0.05)
        return self

    def ping(self) -> bool:
        return ask((self.host, self.port), socket.AF_INET, b"PING\r\n").startswith(b"+PONG")
