#!/bin/sh
# Installs what bench/run.py needs (only when `make bench` runs, so the bench
# packages never slow `make test`). Idempotent. Never configures or starts the
# system Postfix (/etc/postfix stays as the package made it) nor the system
# qpsmtpd service: both peers run as private instances from bench/work/.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)

# qpsmtpd: the peer we replace; libnet-ip-perl: its relay plugin dies without
# it. python3-aiosmtpd: the Python peer, Debian's build. matplotlib: the plot.
need=""
for p in postfix qpsmtpd libnet-ip-perl python3-aiosmtpd python3-matplotlib python3-venv; do
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

echo "bench: dependencies ready"
