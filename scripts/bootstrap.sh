#!/usr/bin/env bash
# Install what `make run` / `make test` need on a fresh Debian 12 machine:
# apt packages (only the missing ones), then a venv with the pinned deps.
# Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Package lists live in scripts/apt/: run.txt for `make run`, and with
# --test every test-*.txt too (one list per area, so each area owns its list).
lists=(scripts/apt/run.txt)
if [ "${1:-}" = "--test" ]; then
    lists+=(scripts/apt/test-*.txt)
fi
mapfile -t APT_PACKAGES < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "${lists[@]}" | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    # Postfix is only a test tool here (smtp-source, private instances):
    # never let its postinst configure a system mailer.
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    # Test tools only: their system daemons (postfix, spamd, clamd, freshclam,
    # which would download signatures) must not start. Images built for
    # containers already forbid it with policy-rc.d; elsewhere, for the install.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 755 /usr/sbin/policy-rc.d
        trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The container test's systemd-nspawn: pinned to the host's systemd version
# (else apt would upgrade the host's systemd) and without recommends (else
# libnss-mymachines, which edits /etc/nsswitch.conf).
if [ "${1:-}" = "--test" ] && ! dpkg-query -W -f='${Status}' systemd-container 2>/dev/null | grep -q "install ok installed"; then
    pin="systemd-container=$(dpkg-query -W -f='${Version}' systemd)"
    echo "bootstrap: installing $pin" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$pin" >/dev/null
fi

VENV=.venv
stamp="$VENV/.stamp-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -e "$stamp" ]; then
    echo "bootstrap: building $VENV" >&2
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check wheel
    "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test,lint]'
    touch "$stamp"
fi
