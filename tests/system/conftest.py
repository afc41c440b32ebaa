"""Fixtures for the operators' side: the freshly built packages, the cached
debootstrapped rootfs, and a booted container with the .deb installed.

Every container test runs once per Debian release in RELEASES (the rootfs
fixture is parametrized; `container` inherits it), so the .deb is kept
working on the current stable as well as on the one it is built on."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from system.container import Container, remove_stale_cgroups
from system.sysutil import ARTIFACTS, CACHE, REPO, TIMINGS, timed

# Already in the rootfs (the base list of build-rootfs.sh): alternatives naming
# one of these need nothing more.
ROOTFS_BASE = {"systemd", "systemd-sysv", "dbus", "python3"}
# Debian 12 (built on, Python 3.11, systemd 252) and 13 (Python 3.13, systemd
# 257), both from the host's mirror.
RELEASES = ("bookworm", "trixie")


def _run_script(argv: list[str], what: str, timeout: float, out_dir: str) -> str:
    env = dict(os.environ, QSMTP_DIST=out_dir)
    try:
        result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                                timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} took more than {timeout:g} s", pytrace=False)
    if result.returncode != 0:
        pytest.fail(f"{what} failed (exit {result.returncode}):\n{result.stderr[-3000:]}",
                    pytrace=False)
    return result.stdout


@pytest.fixture(scope="session")
def out_dir():
    """Private output dir: other checkouts' `make test` runs may build at the
    same time, and dist/ is the user's (`make deb`)."""
    path = os.path.join(CACHE, f"out-{os.getpid()}")
    os.makedirs(path, exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def built_deb(out_dir) -> str:
    """packaging/build-deb.sh (dpkg-buildpackage + lintian) -> the .deb."""
    with timed("build_deb"):
        out = _run_script(["bash", "packaging/build-deb.sh"], "make deb", 300, out_dir)
    os.makedirs(ARTIFACTS, exist_ok=True)
    shutil.copy(os.path.join(out_dir, "lintian.txt"), ARTIFACTS)
    return os.path.join(REPO, out.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def built_rpm(out_dir) -> str:
    with timed("build_rpm"):
        out = _run_script(["bash", "packaging/build-rpm.sh"], "make rpm", 300, out_dir)
    return os.path.join(REPO, out.strip().splitlines()[-1])


def deb_depends(deb: str) -> list[str]:
    """Debian packages the rootfs needs for `dpkg -i deb` (no network there)."""
    field = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], capture_output=True,
                           text=True, check=True).stdout
    needed = []
    for clause in field.split(","):
        names = [alt.split("(")[0].strip().split(":")[0] for alt in clause.split("|")]
        if names and not any(name in ROOTFS_BASE for name in names):
            needed.append(names[0])
    return sorted(set(needed))


def control_depends() -> list[str]:
    """The explicit Depends of packaging/debian/control (tests/system/
    test_units.py keeps them a superset of pyproject's dependencies)."""
    text = Path(os.path.join(REPO, "packaging", "debian", "control")).read_text()
    field = text.split("\nPackage: qsmtp", 1)[1].split("\nDepends:", 1)[1]
    field = field.split("\nDescription:", 1)[0]
    return sorted(name.strip() for name in field.replace("\n", " ").split(",")
                  if name.strip() and not name.strip().startswith("${"))


@pytest.fixture(scope="session", params=RELEASES)
def rootfs(request) -> str:
    """Cached under .cache/systest/rootfs-<release>-<key>: rebuilt only when
    the package's dependencies (or build-rootfs.sh) change. On a fresh
    machine debootstrap runs while the .deb builds."""
    release = request.param
    include = control_depends() + ["swaks"]
    start = time.monotonic()
    proc = subprocess.Popen(["bash", "tests/system/build-rootfs.sh", CACHE, release,
                             ",".join(include)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deb = request.getfixturevalue("built_deb")
        out, err = proc.communicate(timeout=420)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    TIMINGS[f"rootfs_{release}"] = round(time.monotonic() - start, 2)
    if proc.returncode != 0:
        pytest.fail(f"debootstrap of the container rootfs failed:\n{err[-3000:]}", pytrace=False)
    missing = set(deb_depends(deb)) - set(include)
    assert not missing, (f"the .deb depends on {sorted(missing)}, which the container "
                         f"rootfs lacks: add them to Depends in packaging/debian/control")
    path = os.path.join(REPO, out.strip().splitlines()[-1])
    for old in glob.glob(os.path.join(CACHE, f"rootfs-{release}-*")):
        if os.path.realpath(old) != os.path.realpath(path) and ".tmp." not in old:
            shutil.rmtree(old, ignore_errors=True)  # an outdated package list
    return path


@pytest.fixture(scope="module")
def container(rootfs, built_deb):
    """Booted, with the fresh .deb installed. Always powered off after."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    share = os.path.join(CACHE, f"share-{os.getpid()}")
    os.makedirs(share, exist_ok=True)
    shutil.copy(built_deb, share)
    remove_stale_cgroups()
    release = os.path.basename(rootfs).split("-")[1]
    box = Container(rootfs, share, os.path.join(ARTIFACTS, f"console-{release}.log"),
                    lifetime=480)
    box.release = release
    try:
        with timed(f"boot_{release}"):
            box.boot(timeout=60)
        with timed(f"install_deb_{release}"):
            box.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q /opt/qsmtp/*.deb",
                    timeout=120)
        yield box
    finally:
        with timed(f"poweroff_{release}"):
            box.poweroff()
        shutil.rmtree(share, ignore_errors=True)
        for stale in glob.glob(os.path.join(CACHE, "share-*")):
            pid = stale.rsplit("-", 1)[-1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(stale, ignore_errors=True)
        with open(os.path.join(ARTIFACTS, "timings.txt"), "w") as handle:
            handle.writelines(f"{k} {v}\n" for k, v in TIMINGS.items())
