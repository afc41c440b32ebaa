"""The package on a real booted systemd (PID 1 in systemd-nspawn): socket
activation, mail, qsmtpctl, the journal, reload and restart under load, purge.

The tests run in file order on one container (module fixture): each step
builds on the one before, as an operator's session would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from system.sysutil import ARTIFACTS, REPO, timed

# The first test's setup may debootstrap the rootfs (network-bound, ~1.5-4 min
# on a fresh machine) while the .deb builds: more than the suite's 300 s.
pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

SENDER = os.path.join(REPO, "tests", "system", "sender.py")


def _status(box) -> dict:
    return json.loads(box.run("qsmtpctl status --json").stdout)


def _maildir_count(box) -> int:
    return int(box.run("ls /var/spool/qsmtp/maildir/new | wc -l").stdout)


def _send_under(box, action: str, seconds: float = 8.0, during=None) -> dict:
    """Keep 3 clients sending for `seconds`, run `action` in the container
    after 2 s (then `during()`), return the sender's counts."""
    proc = box.popen_in_net([sys.executable, SENDER, "--seconds", str(seconds),
                             "--threads", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)
        box.run(action, timeout=60)
        if during:
            during()
        out, err = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"sender failed: {err}"
    return json.loads(out)


def _save_screen(box, name: str) -> str:
    time.sleep(1.0)
    screen = box.run("qsmtpctl status").stdout
    with open(os.path.join(ARTIFACTS, name), "w") as handle:
        handle.write(screen)
    return screen


def test_socket_activation_and_swaks(container):
    box = container
    box.run("systemctl start qsmtp.socket")
    assert box.run("systemctl is-enabled qsmtp.socket").stdout.strip() == "enabled"
    assert box.run("systemctl is-active qsmtp.service", check=False).stdout.strip() \
        == "inactive", "the service must start on the first connection, not at install"
    with timed("first_mail"):
        out = box.run("swaks --server 127.0.0.1:25 --from alice@example.test "
                      "--to bob@example.test --header 'Subject: systest' "
                      "--body 'hello from swaks'", timeout=60)
    assert "<-  250 2.0.0 Ok: queued as " in out.stdout, out.stdout
    # READY=1 comes once idle_children workers accept: the first may already
    # have served the mail.
    box.wait_output("systemctl is-active qsmtp.service", "active")
    stored = box.run("cat /var/spool/qsmtp/maildir/new/*").stdout
    assert "Delivered-To: <bob@example.test>" in stored
    assert "Subject: systest" in stored and "hello from swaks" in stored
    owner = box.run("stat -c %U /var/spool/qsmtp/maildir/new").stdout.strip()
    assert owner == "qsmtp"
    # What tmpfiles.d/qsmtp.conf says is what the spool has: qsmtp only.
    modes = box.run("stat -c '%a %U:%G' /var/spool/qsmtp /var/spool/qsmtp/maildir "
                    "/var/spool/qsmtp/maildir/new "
                    "/var/spool/qsmtp/maildir/new/*").stdout.split("\n")
    assert modes[:4] == ["750 qsmtp:qsmtp", "700 qsmtp:qsmtp", "700 qsmtp:qsmtp",
                         "600 qsmtp:qsmtp"], modes


def test_every_command_the_units_and_scripts_run_is_installed(container):
    # The rootfs is minbase + the package's Depends (no procps of its own):
    # a command a unit or maintainer script runs must come from Depends.
    box = container
    units = box.run("cat /lib/systemd/system/qsmtp.service "
                    "/lib/systemd/system/qsmtp*.socket").stdout
    commands = set()
    for line in units.splitlines():
        key, _, value = line.partition("=")
        if key.strip().startswith("Exec") and value.strip():
            commands.add(value.strip().lstrip("-@+!:").split()[0])
    scripts = box.run("cat /var/lib/dpkg/info/qsmtp.postinst /var/lib/dpkg/info/qsmtp.prerm "
                      "/var/lib/dpkg/info/qsmtp.postrm").stdout
    for name in ("deb-systemd-invoke", "deb-systemd-helper", "systemd-sysusers",
                 "systemd-tmpfiles", "rmdir"):
        if name in scripts:
            commands.add(name)
    assert "/usr/bin/qsmtp" in commands, commands
    missing = [c for c in sorted(commands)
               if box.run(f"command -v {c}", check=False).returncode != 0]
    assert not missing, f"not installed by Depends on {box.release}: {missing}"


def test_units_documentation_and_me_tell_the_truth(container):
    # Documentation= names what the .deb installed (README.md.gz after
    # dh_compress, the man pages); the banner names the host, not
    # localhost.localdomain (no me in the shipped config).
    box = container
    for unit in ("qsmtp.service", "qsmtp.socket", "qsmtp-submission.socket"):
        docs = box.run(f"systemctl show -P Documentation {unit}").stdout.replace('"', "").split()
        assert "file:/usr/share/doc/qsmtp/README.md.gz" in docs, docs
        for doc in docs:
            path = (doc[5:] if doc.startswith("file:") else
                    "/usr/share/man/man{1}/{0}.{1}.gz".format(*doc[4:-1].split("(")))
            assert box.run(f"test -s {path}", check=False).returncode == 0, (unit, doc, path)
    host = box.run("hostname").stdout.strip()
    out = box.run("swaks --server 127.0.0.1:25 --quit-after CONNECT", timeout=60).stdout
    assert f"<-  220 {host}.localdomain ESMTP" in out, out


def test_status_shows_pool(container):
    box = container
    doc = _status(box)
    main_pid = int(box.run("systemctl show -P MainPID qsmtp.service").stdout)
    assert doc["supervisor"]["pid"] == main_pid
    assert doc["pool"]["max"] == 15 and doc["pool"]["workers"] >= 5
    assert doc["pool"]["idle"] + doc["pool"]["busy"] == doc["pool"]["workers"]
    assert doc["supervisor"]["sessions_total"] >= 1
    users = set(box.run(f"ps -o user= --ppid {main_pid}").stdout.split())
    assert users == {"qsmtp"}, users
    screen = box.run("qsmtpctl status").stdout
    assert f"supervisor pid {main_pid}" in screen and "/15 workers" in screen
    with open(os.path.join(ARTIFACTS, "status.txt"), "w") as handle:
        handle.write(screen)
    status_line = box.run("systemctl show -P StatusText qsmtp.service").stdout
    assert "workers" in status_line


def test_status_permissions_name_the_group(container):
    # The registry is readable by group qsmtp only: others get exit 2 and
    # the group to join; a member of the group reads it without root.
    outsider = container.run("setpriv --reuid=nobody --regid=nogroup --clear-groups "
                             "qsmtpctl status", check=False)
    assert outsider.returncode == 2, outsider
    assert "join group qsmtp" in outsider.stderr
    member = container.run("setpriv --reuid=nobody --regid=nogroup --groups=qsmtp "
                           "qsmtpctl status --json", check=False)
    assert member.returncode == 0, member
    assert json.loads(member.stdout)["pool"]["workers"] >= 5


def _journal_json(box, match: str) -> list[dict]:
    out = box.run(f"journalctl -o json --no-pager {match}").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_journal_finds_the_session_by_the_queue_id_of_the_250(container):
    # The id the client is told is the one the journal is searched by
    # (QSMTP_QUEUE_ID), the transaction id is set (QSMTP_TXN), and the
    # session's other lines share its QSMTP_SESSION.
    box = container
    out = box.run("swaks --server 127.0.0.1:25 --from alice@example.test "
                  "--to bob@example.test", timeout=60).stdout
    queue_id = out.split("<-  250 2.0.0 Ok: queued as ", 1)[1].split()[0]
    time.sleep(0.5)  # the worker logs the session line after the close
    records = _journal_json(box, f"QSMTP_QUEUE_ID={queue_id}")
    assert records, f"journalctl QSMTP_QUEUE_ID={queue_id} found nothing:\n" \
        + box.journal("qsmtp.service")
    message = [r for r in records if f"queued as {queue_id}:" in r["MESSAGE"]]
    assert len(message) == 1, records
    line = message[0]
    assert line.get("QSMTP_TXN") and line["QSMTP_TXN"] in line["MESSAGE"], line
    assert "from=<alice@example.test> nrcpt=1 size=" in line["MESSAGE"], line
    assert line.get("QSMTP_PEER") == "127.0.0.1" and line.get("QSMTP_SERVICE") == "smtp"
    assert line.get("SYSLOG_IDENTIFIER") == "qsmtp", line
    session = _journal_json(box, f"QSMTP_SESSION={line['QSMTP_SESSION']}")
    assert any("disconnect from" in r["MESSAGE"] and "result=accepted" in r["MESSAGE"]
               for r in session), session
    every = _journal_json(box, "-u qsmtp.service")
    bad = [r for r in every if "None" in (r.get("THREAD_NAME"), r.get("PROCESS_NAME"))]
    assert not bad, bad[:2]
    assert not [r for r in every if str(r.get("MESSAGE", "")).startswith("<")], \
        "sd-daemon prefixes in the journal"
    with open(os.path.join(ARTIFACTS, f"journal-{box.release}.txt"), "w") as handle:
        handle.write(box.journal("qsmtp.service", 60))


def test_reload_under_load_fails_no_transaction(container):
    box = container
    before = _status(box)["supervisor"]["generation"]
    stored = _maildir_count(box)
    with timed("reload_under_load"):
        counts = _send_under(box, "systemctl reload qsmtp.service",
                             during=lambda: _save_screen(box, "status-load.txt"))
    assert counts["refused"] == 0 and counts["failed"] == 0, counts
    assert counts["ok"] >= 20, counts
    doc = _status(box)
    assert doc["supervisor"]["generation"] == before + 1, doc["supervisor"]
    assert _maildir_count(box) == stored + counts["ok"]
    with open(os.path.join(ARTIFACTS, "reload.json"), "w") as handle:
        json.dump(counts, handle)


def test_qsmtpctl_reload_waits_for_the_new_generation(container):
    before = _status(container)["supervisor"]["generation"]
    out = container.run("qsmtpctl reload --timeout 30").stdout
    assert out.startswith(f"reloaded: generation {before + 1} serving"), out
    doc = _status(container)
    assert {w["generation"] for w in doc["workers"]} == {before + 1}


def test_restart_under_load_refuses_no_connection(container):
    box = container
    old_pid = _status(box)["supervisor"]["pid"]
    stored = _maildir_count(box)
    with timed("restart_under_load"):
        counts = _send_under(box, "systemctl restart qsmtp.service", seconds=10.0)
    assert counts["refused"] == 0, counts
    assert counts["ok"] >= 20, counts
    new_pid = _status(box)["supervisor"]["pid"]
    assert new_pid != old_pid
    # Every 250 is a stored message: nothing acknowledged was lost in the restart.
    assert _maildir_count(box) == stored + counts["ok"]
    with open(os.path.join(ARTIFACTS, "restart.json"), "w") as handle:
        json.dump(counts, handle)


# The documented way to switch submission on while qsmtp serves (README,
# packaging/README.md, the socket unit): one transaction, in which the
# service's stop runs first (port 25 keeps queuing), then the new socket,
# then the service with both fds. `enable --now` alone is refused by systemd
# while the service runs ("Socket service qsmtp.service already active").
SUBMISSION_ON = ("systemctl enable qsmtp-submission.socket && "
                 "systemctl restart qsmtp.service qsmtp-submission.socket")


def test_submission_switched_on_under_load_refuses_nothing_on_25(container):
    box = container
    assert box.run("systemctl is-active qsmtp-submission.socket", check=False
                   ).stdout.strip() == "inactive"
    assert box.run("systemctl is-active qsmtp.service").stdout.strip() == "active"
    stored = _maildir_count(box)
    with timed(f"submission_on_{box.release}"):
        counts = _send_under(box, SUBMISSION_ON, seconds=10.0)
    # 0 refused on 25. A session idle between transactions when the old
    # supervisor stops may get `421 4.3.2` (the stop contract): a temporary
    # failure the sender retries, never a refused connection or a 5xx.
    assert counts["refused"] == 0, counts
    assert all(re.search(r"\(4\d\d, ", reason) for reason in counts["failures"]), counts
    assert counts["ok"] >= 20, counts
    assert _maildir_count(box) == stored + counts["ok"]
    assert box.run("systemctl is-active qsmtp-submission.socket").stdout.strip() == "active"
    assert box.run("systemctl is-enabled qsmtp-submission.socket").stdout.strip() == "enabled"
    out = box.run("swaks --server 127.0.0.1:587 --from alice@example.test "
                  "--to erin@example.test", timeout=60).stdout
    assert "<-  250 2.0.0 Ok: queued as " in out, out
    # the same supervisor serves both: its workers hold the 587 listener
    shown = box.run("qsmtpctl config show").stdout
    assert "submission" in shown and "587" in shown, shown
    with open(os.path.join(ARTIFACTS, f"submission-{box.release}.json"), "w") as handle:
        json.dump(counts, handle)


def test_package_upgrade_under_load_refuses_no_connection(container):
    # An upgrade (here: the same .deb again) restarts a running service but
    # never the socket, so clients keep connecting throughout.
    box = container
    old_pid = _status(box)["supervisor"]["pid"]
    with timed("upgrade_under_load"):
        counts = _send_under(box, "DEBIAN_FRONTEND=noninteractive dpkg -i /opt/qsmtp/*.deb",
                             seconds=12.0)
    assert counts["refused"] == 0 and counts["ok"] >= 20, counts
    box.wait_output("systemctl is-active qsmtp.service", "active")
    assert _status(box)["supervisor"]["pid"] != old_pid, "try-restart did not happen"
    with open(os.path.join(ARTIFACTS, "upgrade.json"), "w") as handle:
        json.dump(counts, handle)


def test_crashed_supervisor_is_restarted_without_leftovers(container):
    box = container
    old_pid = int(box.run("systemctl show -P MainPID qsmtp.service").stdout)
    box.run(f"kill -KILL {old_pid}")
    # Restart=on-failure after RestartSec=2; the dead run's registry is gone
    # (RemoveIPC=, RuntimeDirectory=) and the new one is the only segment.
    deadline = time.monotonic() + 30
    new_pid = old_pid
    while time.monotonic() < deadline and new_pid in (old_pid, 0):
        time.sleep(0.3)
        if box.run("systemctl is-active qsmtp.service", check=False).stdout.strip() == "active":
            new_pid = int(box.run("systemctl show -P MainPID qsmtp.service").stdout)
    assert new_pid not in (old_pid, 0), box.journal("qsmtp.service")
    assert _status(box)["supervisor"]["pid"] == new_pid
    segments = box.run("tail -n +2 /proc/sysvipc/shm").stdout.strip().splitlines()
    assert len(segments) == 1, segments
    out = box.run("swaks --server 127.0.0.1:25 --to carol@example.test", timeout=60)
    assert "<-  250 2.0.0 Ok: queued as " in out.stdout


def test_watchdog_is_fed(container):
    # WatchdogSec=60 in the unit; a 3 s drop-in shows within seconds whether
    # the supervisor sends WATCHDOG=1 (else systemd would kill it, and
    # Restart= would start a new one with another pid).
    box = container
    box.run("mkdir -p /run/systemd/system/qsmtp.service.d && printf "
            "'[Service]\\nWatchdogSec=3s\\n' >/run/systemd/system/qsmtp.service.d/wd.conf "
            "&& systemctl daemon-reload && systemctl restart qsmtp.service")
    try:
        pid = box.run("systemctl show -P MainPID qsmtp.service").stdout.strip()
        assert box.run("systemctl show -P WatchdogUSec qsmtp.service").stdout.strip() == "3s"
        time.sleep(7)
        assert box.run("systemctl show -P MainPID qsmtp.service").stdout.strip() == pid, \
            box.journal("qsmtp.service")
        assert box.run("systemctl show -P WatchdogTimestampMonotonic qsmtp.service"
                       ).stdout.strip() != "0"
    finally:
        box.run("rm -rf /run/systemd/system/qsmtp.service.d && systemctl daemon-reload "
                "&& systemctl restart qsmtp.service")


def test_qsmtpctl_stop_says_the_socket_restarts_it(container):
    box = container
    pid = _status(box)["supervisor"]["pid"]
    out = box.run("qsmtpctl stop").stdout
    assert out.startswith(f"stopped (pid {pid})"), out
    assert "systemctl stop qsmtp.socket qsmtp.service" in out, out
    box.wait_output("systemctl is-active qsmtp.service", "inactive")
    assert box.run("qsmtpctl status", check=False).returncode == 1
    out = box.run("swaks --server 127.0.0.1:25 --to dave@example.test", timeout=60)
    assert "<-  250 2.0.0 Ok: queued as " in out.stdout
    assert _status(box)["supervisor"]["pid"] != pid


def test_shipped_config_checks_in_place(container):
    out = container.run("qsmtpctl config check /etc/qsmtp/qsmtp.toml")
    assert out.stdout.strip().startswith("/etc/qsmtp/qsmtp.toml: OK"), out.stdout


def test_purge_leaves_nothing_running(container):
    box = container
    assert box.run("cat /proc/sysvipc/shm | wc -l").stdout.strip() != "1"
    with timed("purge"):
        box.run("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q qsmtp", timeout=120)
    box.wait_output("systemctl is-active qsmtp.service", "inactive")
    shm = box.run("tail -n +2 /proc/sysvipc/shm").stdout.strip()
    sem = box.run("tail -n +2 /proc/sysvipc/sem").stdout.strip()
    assert shm == "" and sem == "", f"SysV objects left:\n{shm}\n{sem}"
    procs = box.run("ps -eo user=,args=").stdout
    left = [p for p in procs.splitlines() if "qsmtp" in p and "ps -eo" not in p]
    assert not left, left
    assert box.run("test -e /etc/qsmtp/qsmtp.toml || echo gone").stdout.strip() == "gone"
    assert box.run("test -e /run/qsmtp || echo gone").stdout.strip() == "gone"
    sockets = [line.split() for line in
               box.run("tail -q -n +2 /proc/net/tcp /proc/net/tcp6").stdout.splitlines()]
    listening = [f for f in sockets if f[1].endswith(":0019") and f[3] == "0A"]
    assert not listening, "port 25 still listening after purge"
