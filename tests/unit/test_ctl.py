"""qsmtpctl end to end: CliRunner for config and not-running paths, the real
console script against a real registry, as root and as nobody, and
reload/stop against a stand-in supervisor process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import as_user
from qsmtp.ctl.cli import cli, main
from qsmtp.registry import Registry

QSMTPCTL = os.path.join(os.path.dirname(sys.executable), "qsmtpctl")


@pytest.fixture
def conf(runtime_dir):
    """A config naming runtime_dir/run; both readable by nobody."""
    run = os.path.join(runtime_dir, "run")
    os.mkdir(run)
    os.chmod(run, 0o755)
    path = os.path.join(runtime_dir, "qsmtp.toml")
    with open(path, "w") as handle:
        handle.write(f'[server]\nruntime_dir = "{run}"\nchildren = 6\nidle_children = 2\n'
                     f'grace = 1\n[relay]\ndomains = ["example.test"]\n')
    os.chmod(path, 0o644)
    return path


def run_dir(conf_path: str) -> str:
    return os.path.join(os.path.dirname(conf_path), "run")


def ctl(*args: str, user: str | None = None) -> subprocess.CompletedProcess:
    # As another user: from a copy that user can read (the checkout may not be).
    argv = [*as_user.setpriv(user, "nogroup"), *as_user.qsmtpctl()] if user else [QSMTPCTL]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60,
                          env=as_user.env() if user else {**os.environ, "HOME": "/"})


# ---- config ----------------------------------------------------------------------
def test_config_check_ok(conf):
    result = CliRunner().invoke(cli, ["config", "check", conf])
    assert result.exit_code == 0, result.output
    assert result.output == f"{conf}: OK\n"


@pytest.mark.parametrize("body, line", [
    ("[server]\nchildren = 0\n", "server.children: must be between 1 and 4096 (got 0)"),
    ("[server]\nbogus = 1\n", "server.bogus: unknown key"),
    ("[server\n", "-: invalid TOML"),
    ("[[plugins]]\nname = \"no_such_plugin_xyz\"\n", "plugins.no_such_plugin_xyz"),
])
def test_config_check_bad(tmp_path, body, line):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert result.exit_code == 78, result.output
    assert result.output.startswith(f"{path}: ") and line in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [
    ["--config", "{c}", "config", "show"],
    ["config", "show", "--config", "{c}"],
    ["config", "--config", "{c}", "show"],
    ["-c", "{c}", "config", "show"],
])
def test_config_show_with_config_anywhere(conf, args):
    result = CliRunner().invoke(cli, [a.format(c=conf) for a in args])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"# effective configuration of {conf}"
    assert "[server]" in lines and "[relay]" in lines and "[tls]" in lines
    line = next(x for x in lines if x.startswith("children = "))
    assert line.split("#")[0].strip() == "children = 6" and line.endswith("# file")
    line = next(x for x in lines if x.startswith("timeout = "))
    assert line.endswith("# default")
    assert any(x.startswith('domains = ["example.test"]') for x in lines)


def test_config_check_uses_config_option(conf):
    result = CliRunner().invoke(cli, ["config", "check", "--config", conf])
    assert result.exit_code == 0 and result.output == f"{conf}: OK\n"


# ---- not running / unreadable ------------------------------------------------------
@pytest.mark.parametrize("command", [["status"], ["reload"], ["stop"]])
def test_not_running(conf, command):
    result = CliRunner(mix_stderr=False).invoke(cli, [*command, "--config", conf])
    assert result.exit_code == 1, result.output
    assert result.stderr == f"qsmtp is not running (no registry at {run_dir(conf)}/registry)\n"
    assert result.stdout == ""


def test_not_running_json_and_prometheus_still_answer(conf):
    result = CliRunner(mix_stderr=False).invoke(cli, ["status", "--json", "-c", conf])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["running"] is False and doc["config"] == conf
    assert "no registry at" in doc["reason"]
    result = CliRunner(mix_stderr=False).invoke(cli, ["status", "--format", "prometheus",
                                                      "-c", conf])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == "qsmtp_up 0"


def test_broken_config_warns_and_still_finds_the_instance(tmp_path, conf):
    # The runtime_dir is still read from a file that fails validation.
    broken = tmp_path / "broken.toml"
    broken.write_text(Path(conf).read_text().replace("children = 6", "children = 0"))
    result = CliRunner(mix_stderr=False).invoke(cli, ["status", "--json", "-c", str(broken)])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["running"] is False
    assert f"no registry at {run_dir(conf)}/registry" in result.stderr
    assert result.stderr.startswith(f"qsmtpctl: warning: {broken}: server.children: ")


def test_main_returns_codes(conf):
    assert main(["status", "--config", conf]) == 1
    assert main(["--no-such-flag"]) == 2
    assert main(["--help"]) == 0


def test_help_mentions_completion():
    result = CliRunner().invoke(cli, ["--help"])
    assert "_QSMTPCTL_COMPLETE=bash_source qsmtpctl" in result.output


def test_stale_registry_of_dead_supervisor(conf, sysv_guard):
    pid = os.fork()
    if pid == 0:
        try:
            Registry.create(run_dir(conf), 2, os.getpid())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    sysv_guard.track(run_dir(conf))
    result = ctl("status", "--config", conf)
    assert result.returncode == 1
    assert f"supervisor pid {pid} is gone" in result.stderr
    Registry.create(run_dir(conf), 2, os.getpid()).remove()  # replaces the stale one


# ---- a real registry ----------------------------------------------------------------
@pytest.fixture
def live(conf, sysv_guard):
    reg = Registry.create(run_dir(conf), 6, os.getpid())
    sysv_guard.track(run_dir(conf))
    reg.set_header(state="running", children=6, idle_children=2, max_from_ip=2)
    reg.set_generation(4)
    served = reg.claim_slot()  # a worker that served 17 sessions and retired
    reg.set_slot(served, 4999, 3)
    for n in range(17):
        assert reg.mark_busy(served, "198.51.100.1", "smtp", 2) is None
        reg.mark_idle(served, n + 1)
    reg.release_slot(served)
    for n, peer in enumerate(["192.0.2.7", "::ffff:192.0.2.7", "2001:db8::9", None]):
        index = reg.claim_slot()
        reg.set_slot(index, 5000 + n, 4)
        if peer:
            assert reg.mark_busy(index, peer, "smtp", 2) is None
    yield reg
    reg.remove()


def test_status_json_subprocess(conf, live):
    result = ctl("--config", conf, "status", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["supervisor"]["pid"] == os.getpid()
    assert doc["supervisor"]["generation"] == 4
    assert doc["supervisor"]["sessions_total"] == 17
    assert doc["pool"]["max"] == 6 and doc["pool"]["workers"] == 4
    assert (doc["pool"]["busy"], doc["pool"]["idle"]) == (3, 1)
    assert doc["peers"] == {"192.0.2.7": 2, "2001:db8::9": 1}
    assert [(w["pid"], w["state"], w["peer"]) for w in doc["workers"]] == [
        (5000, "busy", "192.0.2.7"), (5001, "busy", "192.0.2.7"),
        (5002, "busy", "2001:db8::9"), (5003, "idle", None)]
    assert all(w["generation"] == 4 and w["sessions"] == 0 for w in doc["workers"])


def test_status_text_and_prometheus_subprocess(conf, live):
    text = ctl("status", "--config", conf)
    assert text.returncode == 0, text.stderr
    assert "4/6 workers · 3 busy · 1 idle · 17 sessions" in text.stdout
    prom = ctl("status", "--format", "prometheus", "--config", conf)
    assert "qsmtp_workers_busy 3" in prom.stdout.splitlines()


def test_status_watch_stops_cleanly_on_ctrl_c(conf, live):
    import time
    proc = subprocess.Popen([QSMTPCTL, "status", "--watch", "0.2", "--config", conf],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out.count("4/6 workers · 3 busy · 1 idle") >= 2  # redrawn
    assert "Traceback" not in err and "Aborted" not in err


def test_status_as_nobody_names_the_group(conf, live):
    result = ctl("status", "--config", conf, user="nobody")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip() == (f"cannot read the registry at {run_dir(conf)}/registry: "
                                     f"permission denied (join group root)")
    assert "Traceback" not in result.stderr


# ---- reload / stop against a stand-in supervisor --------------------------------------
FAKE_SUPERVISOR = textwrap.dedent("""
    import os, signal, sys, time
    from qsmtp.registry import Registry
    run, mode = sys.argv[1], sys.argv[2]
    reg = Registry.create(run, 4, os.getpid())
    reg.set_header(state="running", children=4)
    slots = [reg.claim_slot() for _ in range(2)]
    for n, i in enumerate(slots):
        reg.set_slot(i, 7000 + n, 1)
    reg.set_generation(1)

    def hup(*_):
        if mode == "fail":
            reg.set_reload("failed", "qsmtp.toml: server.children: must be at least 1")
            return
        reg.set_generation(2)
        for n, i in enumerate(slots):
            reg.set_slot(i, 8000 + n, 2)
        reg.set_reload("ok")

    def term(*_):
        reg.remove()
        os._exit(0)

    signal.signal(signal.SIGHUP, hup)
    signal.signal(signal.SIGTERM, term)
    print("ready", flush=True)
    while True:
        time.sleep(1)
""")


@pytest.fixture
def supervisor(conf, sysv_guard, tmp_path, request):
    script = tmp_path / "fake_supervisor.py"
    script.write_text(FAKE_SUPERVISOR)
    proc = subprocess.Popen([sys.executable, str(script), run_dir(conf), request.param],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    sysv_guard.track(run_dir(conf))
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


@pytest.mark.parametrize("supervisor", ["ok"], indirect=True)
def test_reload_waits_for_new_generation(conf, supervisor):
    result = ctl("reload", "--config", conf, "--timeout", "10")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "reloaded: generation 2 serving (2 workers)"


@pytest.mark.parametrize("supervisor", ["fail"], indirect=True)
def test_reload_failure_is_reported(conf, supervisor):
    result = ctl("reload", "--config", conf, "--timeout", "10")
    assert result.returncode == 1
    assert result.stdout.strip() == ("reload failed: qsmtp.toml: server.children: must be "
                                     "at least 1; generation 1 keeps serving")


@pytest.mark.parametrize("supervisor", ["fail"], indirect=True)
def test_stop_waits_until_registry_is_gone(conf, supervisor):
    result = ctl("--config", conf, "stop", "--timeout", "10")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"stopped (pid {supervisor.pid})"
    assert supervisor.wait(timeout=5) == 0
    assert ctl("status", "--config", conf).returncode == 1


# ---- config check: no side effects, as the service user ----------------------------
def _conf_with_maildir(tmp_path, maildir) -> str:
    path = tmp_path / "check.toml"
    path.write_text(f'[queue]\npath = "{maildir}"\n[relay]\ndomains = ["example.test"]\n')
    os.chmod(tmp_path, 0o755)
    os.chmod(path, 0o644)
    return str(path)


def test_config_check_creates_nothing(tmp_path):
    maildir = tmp_path / "spool" / "maildir"
    path = _conf_with_maildir(tmp_path, maildir)
    result = CliRunner().invoke(cli, ["config", "check", path])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "spool").exists()


def test_config_check_as_root_checks_as_the_service_user(runtime_dir):
    tmp_path = Path(runtime_dir)  # reachable by nobody
    # Root could create the maildir; the service user (here nobody) could
    # not, and the reload would fail: so does the check, creating nothing.
    root_only = tmp_path / "root-only"
    root_only.mkdir(mode=0o755)
    path = _conf_with_maildir(tmp_path, root_only / "maildir")
    result = ctl("config", "check", path, "--as-user", "nobody")
    assert result.returncode == 78, result
    assert result.stderr.strip() == (f"{path}: plugins.queue/maildir.queue.path: cannot "
                                     f"create maildir {root_only}/maildir: Permission denied")
    assert not (root_only / "maildir").exists()
    os.chmod(root_only, 0o777)
    result = ctl("config", "check", path, "--as-user", "nobody")
    assert result.returncode == 0 and result.stdout == f"{path}: OK (as nobody)\n", result


def test_config_check_callers_own_permission_problem_is_not_78(runtime_dir):
    tmp_path = Path(runtime_dir)
    path = _conf_with_maildir(tmp_path, tmp_path / "maildir")
    os.chmod(path, 0o600)  # root's file: nobody cannot read it
    result = ctl("config", "check", path, "--as-user", "root", user="nobody")
    assert result.returncode == 77, result
    assert "permission denied" in result.stderr and "run as root or as root" in result.stderr
