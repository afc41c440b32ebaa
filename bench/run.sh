#!/bin/bash
# `make bench`: install the peers (Debian packages and Haraka, only now:
# never slows `make test`), then run the whole comparison unattended
# (< 25 min) and write docs/BENCHMARKS.md, docs/benchmarks.png and
# bench/results/latest.json (the data of that doc). BENCH_SMOKE=1: a short
# run (a few minutes) that checks everything works, prints its figures and
# writes only bench/work/last-run.json. Extra args go to bench/run.py
# (--runs N, --scale F, --cases abcdef, --servers qsmtp,haraka, --no-doc).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
bash "$HERE/install.sh"
smoke=()
if [ "${BENCH_SMOKE:-0}" = 1 ]; then smoke=(--smoke); fi
# /usr/bin/python3: Debian's matplotlib and aiosmtpd; qsmtp itself and the
# bench's DNS server run from the project venv (.venv, same CPython).
exec timeout --signal=INT 1500 /usr/bin/python3 "$HERE/run.py" "${smoke[@]}" "$@"
