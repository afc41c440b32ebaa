"""Fixtures for the operators' side: the freshly built packages, the cached
debootstrapped rootfs, and a booted container with the .deb installed."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time

import pytest

from system.container import Container

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(REPO, ".cache", "systest")
ARTIFACTS = os.path.join(CACHE, "last-run")  # status screen, journal, timings
TIMINGS: dict[str, float] = {}
# Already in the rootfs (the base list of build-rootfs.sh): alternatives naming
# one of these need nothing more.
ROOTFS_BASE = {"systemd", "systemd-sysv", "dbus", "python3", "procps"}


def _run_script(argv: list[str], what: str, timeout: float) -> str:
    env = dict(os.environ)
    try:
        result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                                timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} took more than {timeout:g} s", pytrace=False)
    if result.returncode != 0:
        pytest.fail(f"{what} failed (exit {result.returncode}):\n{result.stderr[-3000:]}",
                    pytrace=False)
    return result.stdout


def timed(name: str):
    class _Timer:
        def __enter__(self):
            self.start = time.monotonic()

        def __exit__(self, *exc):
            TIMINGS[name] = round(time.monotonic() - self.start, 2)
    return _Timer()


@pytest.fixture(scope="session")
def built_deb() -> str:
    """packaging/build-deb.sh (dpkg-buildpackage + lintian) -> dist/*.deb."""
    with timed("build_deb"):
        out = _run_script(["bash", "packaging/build-deb.sh"], "make deb", 300)
    return os.path.join(REPO, out.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def built_rpm() -> str:
    with timed("build_rpm"):
        out = _run_script(["bash", "packaging/build-rpm.sh"], "make rpm", 300)
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


@pytest.fixture(scope="session")
def rootfs(built_deb) -> str:
    """Cached under .cache/systest/rootfs-<key>: rebuilt only when the
    package's dependencies (or build-rootfs.sh) change."""
    include = ",".join(deb_depends(built_deb) + ["swaks"])
    with timed("rootfs"):
        out = _run_script(["bash", "tests/system/build-rootfs.sh", CACHE, include],
                          "debootstrap of the container rootfs", 420)
    path = os.path.join(REPO, out.strip().splitlines()[-1])
    for old in glob.glob(os.path.join(CACHE, "rootfs-*")):
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
    box = Container(rootfs, share, os.path.join(ARTIFACTS, "console.log"), lifetime=300)
    try:
        with timed("boot"):
            box.boot(timeout=60)
        with timed("install_deb"):
            box.run("dpkg -i /opt/qsmtp/*.deb", timeout=120)
        yield box
    finally:
        with timed("poweroff"):
            box.poweroff()
        shutil.rmtree(share, ignore_errors=True)
        for stale in glob.glob(os.path.join(CACHE, "share-*")):
            pid = stale.rsplit("-", 1)[-1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(stale, ignore_errors=True)
        with open(os.path.join(ARTIFACTS, "timings.txt"), "w") as handle:
            handle.writelines(f"{k} {v}\n" for k, v in TIMINGS.items())
