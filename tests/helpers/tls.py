"""A throwaway self-signed certificate for STARTTLS tests (openssl)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def make_cert(where: Path) -> tuple[Path, Path]:
    """cert.pem and key.pem in `where`, readable by anyone: some daemons
    under test run as nobody."""
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-subj", "/CN=localhost", "-days", "2", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    os.chmod(where, 0o755)
    os.chmod(key, 0o644)
    return cert, key
