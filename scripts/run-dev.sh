#!/usr/bin/env bash
# `make run`: a throwaway config under .run/ that accepts mail from localhost
# into .run/maildir, served in the foreground until Ctrl-C.
set -euo pipefail
run_dir=$1 port=$2
mkdir -p "$run_dir/runtime" "$run_dir/state"
cat >"$run_dir/qsmtp.toml" <<TOML
# Written by \`make run\`; edit etc/qsmtp.toml for a real deployment.
[server]
me = "localhost"
listen = ["127.0.0.1:$port"]
children = 5
idle_children = 2
runtime_dir = "$run_dir/runtime"
state_dir = "$run_dir/state"

[relay]
clients = ["127.0.0.0/8", "::1/128"]
domains = ["localhost"]

[queue]
backend = "maildir"
path = "$run_dir/maildir"
TOML
cat <<MSG
qsmtp: serving on 127.0.0.1:$port, storing mail in $run_dir/maildir/new
       config: $run_dir/qsmtp.toml      (Ctrl-C stops it)
       try:    swaks --server 127.0.0.1:$port --to you@localhost
MSG
exec .venv/bin/qsmtp serve --config "$run_dir/qsmtp.toml"
