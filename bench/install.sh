#!/bin/sh
# Installs what bench/run.py needs (only when `make bench` runs, so the bench
# packages never slow `make test`). Idempotent. Never configures or starts the
# system Postfix (/etc/postfix stays as the package made it) nor the system
# qpsmtpd service: both peers run as private instances from bench/work/.
# Haraka: the versions pinned in bench/peers/haraka/package-lock.json, with
# `npm ci` into bench/work/haraka-npm (a private prefix), on the machine's
# Node.js (Debian's nodejs + npm when there is none).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")

need=""
for p in $(grep -v '^#' "$ROOT/scripts/apt/bench.txt"); do
    case "$p" in
        nodejs) command -v node >/dev/null 2>&1 && continue ;;
        npm) command -v npm >/dev/null 2>&1 && continue ;;
    esac
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || need="$need $p"
done
if [ -n "$need" ]; then
    # Postfix: no system configuration at all; qpsmtpd: service not started.
    cat <<'SEL' | debconf-set-selections
postfix postfix/main_mailer_type select No configuration
SEL
    # A policy-rc.d that refuses service starts keeps the packages' postinst
    # from starting daemons; install one only for this step if none exists.
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $need
    if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# Haraka 3.3.4 needs Node.js >= 20 (Debian 12's own nodejs is 18): say so
# in one line rather than fail later in the middle of the run.
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "bench: Haraka 3.3.4 needs Node.js >= 20; this machine has $(node --version)" >&2
    exit 1
fi

# Haraka: reinstalled only when the lock file changed (stamp = its copy).
prefix="$HERE/work/haraka-npm"
lock="$HERE/peers/haraka/package-lock.json"
if ! cmp -s "$lock" "$prefix/installed-lock.json" 2>/dev/null; then
    rm -rf "$prefix"
    mkdir -p "$prefix"
    cp "$HERE/peers/haraka/package.json" "$lock" "$prefix/"
    # --omit=optional: only the plugins package.json names (no geoip
    # databases, no STUN lookup of a public IP); bounded in time.
    (cd "$prefix" && timeout 900 npm ci --omit=optional --no-audit --no-fund --loglevel=error)
    cp "$lock" "$prefix/installed-lock.json"
fi
echo "bench: dependencies ready (Haraka $(node -p "require('$prefix/node_modules/Haraka/package.json').version") on Node.js $(node --version))"
