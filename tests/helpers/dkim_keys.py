"""DKIM test keys made by the test (openssl), and their DNS TXT record.

    key = make_key(tmp_path / "s1.pem")           # RSA 2048, PEM
    records = {"s1._domainkey.example.test": {"TXT": [key.txt]}}
"""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class DkimKey:
    path: Path
    pem: bytes
    public: str  # base64 DER SubjectPublicKeyInfo (the p= tag)
    txt: str  # the TXT rdata, split in quoted strings of < 255 octets

    def dnsfunc(self, name: str):
        """A dkimpy dnsfunc answering with this key for `name` (exact)."""
        record = ("v=DKIM1; k=rsa; p=" + self.public).encode()

        def lookup(qname: bytes, timeout: float = 5):
            return record if qname.decode().rstrip(".") == name else None
        return lookup


def make_key(path: Path, bits: int = 2048) -> DkimKey:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "genrsa", "-out", str(path), str(bits)], check=True,
                   capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    public = base64.b64encode(der).decode("ascii")
    text = "v=DKIM1; k=rsa; p=" + public
    txt = " ".join(f'"{text[i:i + 200]}"' for i in range(0, len(text), 200))
    return DkimKey(path, path.read_bytes(), public, txt)
