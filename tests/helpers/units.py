"""The shipped systemd unit files (systemd/), read as systemd reads them."""

from __future__ import annotations

import configparser
import os
import subprocess

UNITS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "systemd")


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       empty_lines_in_values=False)
    parser.optionxform = str  # keys are case-sensitive
    with open(os.path.join(UNITS, name)) as handle:
        parser.read_string(handle.read())
    return parser


def security(name: str) -> subprocess.CompletedProcess:
    """`systemd-analyze security` of a shipped unit file, offline."""
    return subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                           os.path.join(UNITS, name)],
                          capture_output=True, text=True, timeout=60)
