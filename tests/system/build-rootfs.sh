#!/usr/bin/env bash
# Build (once) the debootstrapped Debian tree (bookworm, trixie) the container
# tests boot.
# Usage: build-rootfs.sh CACHE_DIR SUITE PKG[,PKG...]   -> prints the rootfs path.
# Cached by the package list and this script; built into a temp dir and
# renamed, so an interrupted build never leaves a half tree that looks done.
set -euo pipefail
cache=$1 suite=$2 extra=$3
here=$(cd "$(dirname "$0")" && pwd)
# No procps: a minimal image lacks /bin/kill, so the package's Depends must
# bring every command its units and scripts run (tests/system/test_units.py).
base="systemd,systemd-sysv,dbus,python3"
# debootstrap does not resolve virtual packages: python3-nacl (for
# python3-dkim) depends on python3-cffi-backend-api-*, which only
# python3-cffi-backend provides.
base="$base,python3-cffi-backend"
include="$base,$extra"
key=$( (printf '%s\n' "$suite" "$include"; cat "$here/build-rootfs.sh") | sha1sum | cut -c1-12)
root="$cache/rootfs-$suite-$key"
mkdir -p "$cache"
# One lock per release: bookworm and trixie build side by side.
exec 9>"$cache/.lock-$suite"
flock -w 600 9
if [ -e "$root/.complete" ]; then
    echo "$root"; exit 0
fi
# The host's own mirror (the VMs pin a snapshot there); deb.debian.org otherwise.
mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null \
         | grep -v security | head -n1 || true)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
tmp="$root.tmp.$$"
# Downloaded .debs are kept: a rebuild after a dependency change is quick.
debs="$(cd "$cache" && pwd)/debs-$suite"
mkdir -p "$debs"
rm -rf "$root" "$root".tmp.*
trap 'rm -rf "$tmp"' EXIT
echo "build-rootfs: debootstrap $suite minbase from $mirror (+ $extra)" >&2
# Own mount/pid namespaces: debootstrap's mounts (proc, sys) vanish with it.
unshare --mount --propagation private --uts --ipc --pid --fork --kill-child --mount-proc -- \
    debootstrap --variant=minbase --cache-dir="$debs" --include="$include" "$suite" "$tmp" "$mirror" \
    >"$cache/debootstrap-$suite.log" 2>&1 || {
        echo "build-rootfs: debootstrap failed, last lines of $cache/debootstrap-$suite.log:" >&2
        tail -n 15 "$cache/debootstrap-$suite.log" >&2; exit 1; }
# Boot faster and quieter: no getty on the console, no units that need
# hardware or the network the container does not have.
chroot "$tmp" systemctl mask -q console-getty.service getty.target \
    systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
    dpkg-db-backup.timer e2scrub_all.timer fstrim.timer 2>/dev/null || true
echo qsmtp-systest >"$tmp/etc/hostname"
rm -f "$tmp"/var/cache/apt/archives/*.deb
touch "$tmp/.complete"
mv "$tmp" "$root"
trap - EXIT
echo "$root"
