"""Dispatcher: loading order, implied built-ins, first-non-DECLINED-wins,
failures and the time budget."""

from __future__ import annotations

import logging
import signal
import sys
import textwrap
import time
import uuid

import pytest

from qsmtp import config as qconfig
from qsmtp.plugins.api import HookResult, PluginError, Result
from qsmtp.plugins.dispatch import Dispatcher
from qsmtp.smtp.state import ConnectionInfo, Session

PLUGIN_MODULE = '''
import time
from qsmtp.plugins.api import Plugin, Option, Result, PluginError

CALLS = []

class Recorder(Plugin):
    """Records calls; answers `answer` at rcpt."""
    options = {"answer": Option(str, "DECLINED", "result at rcpt"),
               "tag": Option(str, "", "name in CALLS")}

    def hook_rcpt(self, session, recipient, params):
        CALLS.append((self.opts.tag, recipient))
        return Result[self.opts.answer], f"from {self.opts.tag}"

    def hook_helo(self, session, host):
        CALLS.append((self.opts.tag, "helo"))
        return None

class Broken(Plugin):
    def hook_rcpt(self, session, recipient, params):
        raise RuntimeError("kaboom")

class Sleepy(Plugin):
    options = {"seconds": Option(float, 5.0)}
    def hook_rcpt(self, session, recipient, params):
        time.sleep(self.opts.seconds)
        return Result.OK

class Swallower(Plugin):
    """Catches everything, including our timeout, and keeps going."""
    def hook_rcpt(self, session, recipient, params):
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                time.sleep(0.01)
            except Exception:
                pass
        return Result.OK

class BadReturn(Plugin):
    def hook_rcpt(self, session, recipient, params):
        return 42

class UnknownHook(Plugin):
    def hook_no_such_thing(self, session):
        return None

class FailingSetup(Plugin):
    def setup(self):
        raise PluginError(self.name, "db", "cannot open")
'''


@pytest.fixture()
def plugmod(tmp_path, monkeypatch):
    name = f"qsmtp_testplug_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(PLUGIN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def make_config(tmp_path, plugins="", relay=True, extra=""):
    text = textwrap.dedent(f"""
        [server]
        me = "mx.example.test"
        hook_timeout = 1
        [queue]
        path = "{tmp_path}/maildir"
        {extra}
    """)
    if relay:
        text += '[relay]\ndomains = ["example.test"]\n'
    path = tmp_path / "qsmtp.toml"
    path.write_text(text + textwrap.dedent(plugins))
    return qconfig.load(str(path))


def session(cfg):
    return Session(conn=ConnectionInfo("192.0.2.1", 4000, "127.0.0.1", 25), config=cfg)


def test_implied_builtins_follow_listed_plugins(tmp_path, plugmod):
    cfg = make_config(tmp_path, f"""
        [[plugins]]
        name = "{plugmod}:Recorder"
        tag = "a"
    """)
    d = Dispatcher.load(cfg)
    assert d.names == [f"{plugmod}:Recorder", "relay", "headers", "queue/maildir"]
    assert (tmp_path / "maildir" / "new").is_dir()


def test_no_relay_section_no_relay_plugin(tmp_path):
    d = Dispatcher.load(make_config(tmp_path, relay=False))
    assert d.names == ["headers", "queue/maildir"]
    assert d.has("queue") and d.has("data_post") and not d.has("rcpt")


def test_listed_builtin_not_added_twice(tmp_path):
    d = Dispatcher.load(make_config(tmp_path, """
        [[plugins]]
        name = "headers"
    """))
    assert d.names == ["headers", "relay", "queue/maildir"]


def test_order_and_first_non_declined_wins(tmp_path, plugmod):
    cfg = make_config(tmp_path, f"""
        [[plugins]]
        name = "{plugmod}:Recorder"
        tag = "first"
        [[plugins]]
        name = "{plugmod}:Recorder"
        tag = "second"
        answer = "DENY"
        [[plugins]]
        name = "{plugmod}:Recorder"
        tag = "third"
        answer = "OK"
    """)
    d = Dispatcher.load(cfg)
    calls = sys.modules[plugmod].CALLS
    result = d.run("rcpt", session(cfg), "rcpt-arg", {})
    assert result == HookResult(Result.DENY, "from second")
    assert calls == [("first", "rcpt-arg"), ("second", "rcpt-arg")]
    calls.clear()
    assert d.run("helo", session(cfg), "h").result is Result.DECLINED
    assert [c[0] for c in calls] == ["first", "second", "third"]


def test_unused_hook_is_declined(tmp_path):
    d = Dispatcher.load(make_config(tmp_path))
    assert not d.has("vrfy")
    assert d.run("vrfy", None, "x").result is Result.DECLINED


def test_exception_gives_failed_denysoft_and_one_log_line(tmp_path, plugmod, caplog):
    cfg = make_config(tmp_path, f'[[plugins]]\nname = "{plugmod}:Broken"\n')
    d = Dispatcher.load(cfg)
    sess = session(cfg)
    with caplog.at_level(logging.ERROR, logger="qsmtp.plugins"):
        result = d.run("rcpt", sess, "r", {})
    assert result.failed and result.result is Result.DENYSOFT
    assert result.message.startswith("4.3.0")
    records = [r for r in caplog.records if r.name == "qsmtp.plugins"]
    assert len(records) == 1
    assert sess.id in records[0].getMessage() and "kaboom" in records[0].getMessage()
    assert records[0].exc_info is not None  # traceback goes to the log only


def test_bad_return_value_is_a_failure(tmp_path, plugmod):
    cfg = make_config(tmp_path, f'[[plugins]]\nname = "{plugmod}:BadReturn"\n')
    assert Dispatcher.load(cfg).run("rcpt", session(cfg), "r", {}).failed


@pytest.mark.parametrize("cls", ["Sleepy", "Swallower"])
def test_time_budget(tmp_path, plugmod, cls):
    cfg = make_config(tmp_path, f'[[plugins]]\nname = "{plugmod}:{cls}"\n')
    d = Dispatcher.load(cfg)
    before = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()
    result = d.run("rcpt", session(cfg), "r", {})
    elapsed = time.monotonic() - started
    assert result.failed and result.result is Result.DENYSOFT
    if cls == "Sleepy":
        assert 0.9 < elapsed < 1.6
    # A hook that swallows every interruption can't be stopped in a
    # single-threaded worker, but its answer is still discarded.
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_outer_timer_is_preserved(tmp_path, plugmod):
    cfg = make_config(tmp_path, f'[[plugins]]\nname = "{plugmod}:Recorder"\n')
    d = Dispatcher.load(cfg)
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        d.run("rcpt", session(cfg), "r", {})
        remaining = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 0 < remaining <= 0.3
        time.sleep(0.5)
        assert fired == [1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_base_exceptions_propagate(tmp_path, plugmod):
    cfg = make_config(tmp_path, f'[[plugins]]\nname = "{plugmod}:Recorder"\n')
    d = Dispatcher.load(cfg)

    class Abort(BaseException):
        pass

    def hook(session, *args):
        raise Abort()
    d._hooks["rcpt"] = (("x", hook),)
    with pytest.raises(Abort):
        d.run("rcpt", session(cfg), "r", {})
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@pytest.mark.parametrize("entry, key", [
    ('name = "no_such_plugin"', "name"),
    ('name = "no.such.module:Thing"', "name"),
    ('name = "{mod}:UnknownHook"', "hook_no_such_thing"),
    ('name = "{mod}:Recorder"\nbogus = 1', "bogus"),
    ('name = "{mod}:Recorder"\nanswer = 3', "answer"),
    ('name = "{mod}:FailingSetup"', "db"),
    ('name = "{mod}"', "name"),  # several Plugin classes and no plugin_class
    ('name = "{mod}:CALLS"', "name"),  # not a Plugin
])
def test_load_errors(tmp_path, plugmod, entry, key):
    cfg = make_config(tmp_path, "[[plugins]]\n" + entry.format(mod=plugmod) + "\n")
    with pytest.raises(PluginError) as info:
        Dispatcher.load(cfg)
    assert info.value.key == key


def test_app_load_turns_plugin_error_into_config_error(tmp_path):
    from qsmtp.app import App
    cfg = make_config(tmp_path, '[[plugins]]\nname = "no_such_plugin"\n')
    with pytest.raises(qconfig.ConfigError) as info:
        App.load(cfg)
    assert "no_such_plugin" in str(info.value)


def test_dispatch_overhead_is_small(tmp_path, plugmod):
    """~10 budgeted hook runs per message must stay far below 1 ms of CPU."""
    cfg = make_config(tmp_path, f'[[plugins]]\nname = "{plugmod}:Recorder"\n')
    d = Dispatcher.load(cfg)
    sess = session(cfg)
    calls = sys.modules[plugmod].CALLS
    started = time.process_time()
    for _ in range(1000):
        d.run("helo", sess, "h")
    per_run = (time.process_time() - started) / 1000
    calls.clear()
    assert per_run < 50e-6, f"{per_run * 1e6:.1f} us per run"


def test_builtins_in_memory_run_without_a_timer(tmp_path, plugmod, monkeypatch):
    """relay, headers and queue/maildir declare `budgeted = False`: their
    hooks arm no SIGALRM timer; a hook shared with a plugin that may block
    (the third-party default) is still budgeted."""
    armed = []
    real = signal.setitimer
    monkeypatch.setattr(signal, "setitimer", lambda *a: armed.append(a) or real(*a))
    cfg = make_config(tmp_path, f'[[plugins]]\nname = "{plugmod}:Recorder"\n')
    d = Dispatcher.load(cfg)
    sess = session(cfg)
    assert d.run("connect", sess).result is Result.DECLINED  # relay only
    assert armed == []
    d.run("rcpt", sess, "r", {})  # Recorder and relay
    assert armed and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert {"connect", "rcpt", "data_post", "queue"} <= d.hooked
    assert "helo" in d.hooked and "vrfy" not in d.hooked
