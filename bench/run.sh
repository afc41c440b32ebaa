#!/bin/bash
# `make bench`: install the peers (Debian packages, only now: never slows
# `make test`), then run the whole comparison unattended (< 15 min) and write
# docs/BENCHMARKS.md + docs/benchmarks.png. Extra args go to bench/run.py
# (--runs N, --scale F, --cases abc, --servers qsmtp,postfix, --no-doc).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
bash "$HERE/install.sh"
# /usr/bin/python3: Debian's matplotlib and aiosmtpd; qsmtp itself runs from
# the project venv (.venv/bin/qsmtp, same CPython).
exec timeout --signal=INT 1200 /usr/bin/python3 "$HERE/run.py" "$@"
