#!/usr/bin/env bash
# `make run`: a throwaway config under .run/ that accepts mail from localhost
# into .run/maildir, served in the foreground until Ctrl-C.
# - says "serving" only once the server has bound its port and is ready;
# - a taken port fails with one line and the way to pick another;
# - never rewrites the config of a dev server that is running from it.
set -euo pipefail
run_dir=$1 port=$2
venv_bin=$PWD/.venv/bin
config=$run_dir/qsmtp.toml
export QSMTP_CONFIG=$config  # qsmtpctl finds this instance without -c

if [ -e "$config" ] && "$venv_bin/qsmtpctl" status --json >/dev/null 2>&1; then
    echo "make run: a dev server already runs from $config; stop it first" \
         "(Ctrl-C in its terminal, or: $venv_bin/qsmtpctl stop)" >&2
    exit 1
fi

mkdir -p "$run_dir/runtime" "$run_dir/state"
cat >"$config" <<TOML
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

# Ctrl-C reaches the whole process group: qsmtp stops gracefully on its own,
# this shell only waits for it.
trap '' INT
"$venv_bin/qsmtp" serve --config "$config" &
server=$!
until "$venv_bin/qsmtpctl" status --json >/dev/null 2>&1; do
    if ! kill -0 "$server" 2>/dev/null; then
        status=0
        wait "$server" || status=$?
        echo "make run: qsmtp did not start (exit $status); if port $port is taken," \
             "pick another: make run PORT=2526" >&2
        exit "$status"
    fi
    sleep 0.1
done
cat <<MSG
qsmtp: serving on 127.0.0.1:$port, storing mail in $run_dir/maildir/new
       config: $config      (Ctrl-C stops it)
       try:    swaks --server 127.0.0.1:$port --to you@localhost
       then, in another terminal of this directory:
               export PATH="$venv_bin:\$PATH" QSMTP_CONFIG="$config"
               qsmtpctl status
MSG
status=0
wait "$server" || status=$?
exit "$status"
