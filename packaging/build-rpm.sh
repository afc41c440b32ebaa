#!/usr/bin/env bash
# Build the .rpm (`make rpm`) with rpmbuild (Debian package `rpm`) in a
# private topdir; output: dist/qsmtp-VERSION-1.noarch.rpm (or $QSMTP_DIST/).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
out=${QSMTP_DIST:-dist}
# Debian's own python3 (with python3-build), not a pyenv/venv one.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME
command -v rpmbuild >/dev/null || { echo "build-rpm: rpmbuild missing (make bootstrap-test)" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)

work=$(mktemp -d "${TMPDIR:-/tmp}/qsmtp-rpm.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{SOURCES,BUILD,RPMS,SRPMS,src/qsmtp-$version}
tar -C "$top" -c --exclude-vcs --exclude=./.venv --exclude=./.cache --exclude=./.run \
    --exclude=./dist --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=.pytest_cache --exclude=.hypothesis --exclude=./bench \
    --exclude=./tests --exclude=./debian . | tar -C "$work/src/qsmtp-$version" -x
# Man pages from the click commands (the venv has them importable).
[ -x "$top/.venv/bin/python" ] || { echo "build-rpm: no .venv (make bootstrap-test)" >&2; exit 1; }
"$top/.venv/bin/python" packaging/manpages.py "$work/src/qsmtp-$version/man"
tar -C "$work/src" -czf "$work/SOURCES/qsmtp-$version.tar.gz" "qsmtp-$version"
cp systemd/sysusers.d/qsmtp.conf "$work/SOURCES/qsmtp.sysusers"

# Fedora defines the systemd/python macros itself; Debian's rpm does not.
load=()
if [ "$(rpm --eval '%{?systemd_post:yes}')" != yes ]; then
    load=(--load packaging/rpm/macros.fallback)
fi
echo "build-rpm: rpmbuild -bb packaging/rpm/qsmtp.spec" >&2
rpmbuild "${load[@]}" -bb --nodeps --define "_topdir $work" \
    --define "qsmtp_version $version" --define "_binary_payload w9.gzdio" \
    packaging/rpm/qsmtp.spec >"$work/build.log" 2>&1 || {
        echo "build-rpm: rpmbuild failed; last lines:" >&2
        tail -n 30 "$work/build.log" >&2; exit 1; }
mkdir -p "$out"
rm -f "$out"/qsmtp-*.rpm
cp "$work"/RPMS/noarch/qsmtp-"$version"-*.noarch.rpm "$out"/
ls "$out"/qsmtp-"$version"-*.noarch.rpm
