"""A config mistake on a real booted systemd (the .deb in systemd-nspawn):
port 25 never closes, clients get a 4xx while the file is invalid, service
is back at once after the fix, and `systemctl reload` fails when the new
config is refused.

The tests run in file order on one container (module fixture).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from system.sysutil import ARTIFACTS, REPO, timed

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

SENDER = os.path.join(REPO, "tests", "system", "sender.py")
CONF = "/etc/qsmtp/qsmtp.toml"
BROKEN_KEY = "no_such_key"


def _break(box) -> None:
    box.run(f"cp {CONF} /root/good.toml && "
            f"sed -i 's/^\\[server\\]$/[server]\\n{BROKEN_KEY} = 1/' {CONF} && "
            f"grep -q '^{BROKEN_KEY} = 1' {CONF}")


def _fix(box) -> None:
    box.run(f"cp /root/good.toml {CONF}")


def _save(name: str, data) -> None:
    os.makedirs(ARTIFACTS, exist_ok=True)
    with open(os.path.join(ARTIFACTS, name), "w") as handle:
        if isinstance(data, str):
            handle.write(data)
        else:
            json.dump(data, handle, indent=1)


def _socket_never_failed(box) -> None:
    assert box.run("systemctl is-active qsmtp.socket", check=False).stdout.strip() == "active"
    assert box.run("systemctl show -P Result qsmtp.socket").stdout.strip() == "success"


def test_up(container):
    box = container
    box.run("systemctl start qsmtp.socket")
    out = box.run("swaks --server 127.0.0.1:25 --to bob@example.test", timeout=60)
    assert "<-  250 2.0.0 Ok: queued as " in out.stdout, out.stdout
    box.wait_output("systemctl is-active qsmtp.service", "active")


def test_restart_with_broken_config_under_load(container):
    """The issue's reproduction: broken file + restart under a sending loop."""
    box = container
    proc = box.popen_in_net([sys.executable, SENDER, "--seconds", "14", "--threads", "3",
                             "--events", "--retry-pause", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)
        _break(box)
        restart = box.run("systemctl restart qsmtp.service", check=False, timeout=90)
        assert restart.returncode == 0, restart
        status_text = box.run("systemctl show -P StatusText qsmtp.service").stdout.strip()
        assert status_text.startswith(f"config invalid: {CONF}: server.{BROKEN_KEY}: "
                                      f"unknown key"), status_text
        screen = box.run("qsmtpctl status")
        assert screen.returncode == 0 and "CONFIG INVALID: " in screen.stdout, screen
        _save("status-config-invalid.txt", screen.stdout + screen.stderr)
        doc = json.loads(box.run("qsmtpctl status --json").stdout)
        assert doc["supervisor"]["state"] == "config-invalid"
        time.sleep(3.0)  # clients meet the invalid config for a while
        refused = box.run("systemctl reload qsmtp.service", check=False, timeout=90)
        assert refused.returncode != 0, refused
        _fix(box)
        fixed_at = time.time()
        with timed("config_fix_reload"):
            reload = box.run("systemctl reload qsmtp.service", check=False, timeout=90)
        assert reload.returncode == 0, (reload, box.journal("qsmtp.service", 30))
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    counts = json.loads(out)
    events = counts.pop("events")
    back = next((at for at, outcome in events if outcome == "ok" and at >= fixed_at), None)
    counts["back_after_fix_s"] = None if back is None else round(back - fixed_at, 3)
    counts["failed_4xx"] = sum(n for code, n in counts["codes"].items() if code.startswith("4"))
    # when the failures without a 4xx happened, seconds after the fix (<0: before)
    counts["not_4xx_at"] = [round(at - fixed_at, 3) for at, outcome in events
                            if outcome not in ("ok",) and not outcome.startswith("4")]
    _save("restart-broken-config.json", counts)
    print(f"\nbroken config + restart under load: {counts}")
    assert counts["refused"] == 0, counts
    assert counts["failed"] > 0, "no client met the invalid config: the test proved nothing"
    assert counts["failed_4xx"] == counts["failed"], counts  # every failure a 4xx
    short = box.run("hostname").stdout.strip().split(".")[0]
    assert any(f"4.3.0 {short}." in text and "configuration error" in text
               for text in counts["failures"]), counts  # the host's FQDN, as Postfix's
    assert back is not None and back - fixed_at < 2.0, counts
    _socket_never_failed(box)
    journal = box.run("journalctl -u qsmtp.service --no-pager -o cat").stdout
    assert journal.count(f"config invalid: {CONF}: server.{BROKEN_KEY}: unknown key;") == 1


def test_reload_exit_codes(container):
    box = container
    good = box.run("systemctl reload qsmtp.service", check=False, timeout=90)
    good_journal = box.journal("qsmtp.service", 30)
    _break(box)
    try:
        bad = box.run("systemctl reload qsmtp.service", check=False, timeout=90)
        journal = box.journal("qsmtp.service", 30)
        screen = box.run("qsmtpctl status", check=False)
    finally:
        _fix(box)
    _save("reload-exit-codes.json", {"good": good.returncode, "bad": bad.returncode})
    _save("journal-reload.txt", good_journal + "\n----\n" + journal)
    print(f"\nsystemctl reload: good file exit {good.returncode}, bad file exit "
          f"{bad.returncode}")
    assert good.returncode == 0, (good, good_journal)
    assert bad.returncode != 0, bad
    whole = f"reload failed: {CONF}: server.{BROKEN_KEY}: unknown key"
    assert whole in journal, journal  # qsmtpctl's line, from ExecReload=
    assert f"last reload FAILED: {CONF}: server.{BROKEN_KEY}: unknown key" in screen.stdout
    out = box.run("swaks --server 127.0.0.1:25 --to carol@example.test", timeout=60)
    assert "<-  250 2.0.0 Ok: queued as " in out.stdout  # the old generation serves
    _socket_never_failed(box)


def test_qsmtpctl_with_a_broken_file(container):
    box = container
    _break(box)
    box.run(f"sed -i 's/^{BROKEN_KEY} = 1/{BROKEN_KEY} = /' {CONF}")  # invalid TOML too
    try:
        screen = box.run("qsmtpctl status", check=False)
        as_json = box.run("qsmtpctl status --json", check=False)
        prom = box.run("qsmtpctl status --format prometheus", check=False)
        shown = box.run("qsmtpctl config show", check=False)
    finally:
        _fix(box)
    _save("status-broken-file.txt", f"$ qsmtpctl status\n{screen.stdout}{screen.stderr}")
    assert screen.returncode == 0 and "supervisor pid" in screen.stdout, screen
    assert screen.stderr.startswith(f"qsmtpctl: warning: {CONF}: -: invalid TOML"), screen
    assert json.loads(as_json.stdout)["running"] is True
    assert "qsmtp_up 1" in prom.stdout
    assert shown.returncode == 78 and "invalid TOML" in shown.stderr
    box.run("systemctl stop qsmtp.socket qsmtp.service")
    down = box.run("qsmtpctl status --json", check=False)
    assert down.returncode == 1 and json.loads(down.stdout)["running"] is False
    prom = box.run("qsmtpctl status --format prometheus", check=False)
    assert prom.returncode == 1 and prom.stdout.splitlines()[-1] == "qsmtp_up 0"
