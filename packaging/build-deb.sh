#!/usr/bin/env bash
# Build the .deb (`make deb`): copy the tree to a temp dir, put
# packaging/debian there as debian/ (the repo keeps no top-level debian/),
# run `dpkg-buildpackage -us -uc -b`, then lintian. Output: dist/.
# Env: LINTIAN=0 skips lintian; QSMTP_DIST=DIR writes there instead of dist/
# (the system tests use a private one: parallel runs must not share files).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
out=${QSMTP_DIST:-dist}
# Debian's own python3 and tools only: a pyenv/venv python first on PATH
# would build with the wrong interpreter.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)
debversion=$(sed -n '1s/^qsmtp (\(.*\)).*/\1/p' packaging/debian/changelog)
if [ "${debversion%-*}" != "$version" ]; then
    echo "build-deb: packaging/debian/changelog says $debversion, pyproject.toml $version:" \
         "add a changelog entry" >&2
    exit 1
fi
for tool in dpkg-buildpackage dh pybuild lintian; do
    command -v "$tool" >/dev/null || { echo "build-deb: $tool missing (make bootstrap-test)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/qsmtp-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src="$work/qsmtp-$version"
mkdir -p "$src"
# The working tree as it is (not just HEAD): what the tests just tested.
tar -C "$top" -c --exclude-vcs --exclude=./.venv --exclude=./.cache --exclude=./.run \
    --exclude=./dist --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=.pytest_cache --exclude=.hypothesis --exclude=./bench \
    --exclude=./tests --exclude=./debian . | tar -C "$src" -x
cp -r packaging/debian "$src/debian"
# Man pages from the click commands (the venv has them importable).
[ -x "$top/.venv/bin/python" ] || { echo "build-deb: no .venv (make bootstrap-test)" >&2; exit 1; }
"$top/.venv/bin/python" packaging/manpages.py "$src/debian/man"
# One copy of these in the repo (systemd/); dh_installsysusers and
# dh_installtmpfiles take them from debian/ and add the postinst calls.
cp systemd/sysusers.d/qsmtp.conf "$src/debian/qsmtp.sysusers"
cp systemd/tmpfiles.d/qsmtp.conf "$src/debian/qsmtp.tmpfiles"

echo "build-deb: dpkg-buildpackage in $src" >&2
(cd "$src" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 || {
    echo "build-deb: dpkg-buildpackage failed; last lines:" >&2
    tail -n 30 "$work/build.log" >&2; exit 1; }

mkdir -p "$out"
rm -f "$out"/qsmtp_*.deb "$out"/qsmtp_*.changes "$out"/qsmtp_*.buildinfo
cp "$work"/qsmtp_"$debversion"_all.deb "$work"/qsmtp_"$debversion"_*.changes \
   "$work"/qsmtp_"$debversion"_*.buildinfo "$out"/
deb="$out/qsmtp_${debversion}_all.deb"
echo "build-deb: $deb" >&2

if [ "${LINTIAN:-1}" != 0 ]; then
    # Errors fail the build; kept warnings are listed in packaging/README.md.
    lintian --fail-on error --suppress-tags-from-file packaging/lintian-suppress \
        "$deb" | tee "$out/lintian.txt"
fi
echo "$deb"
