"""Plugins used by the engine's protocol tests (loaded by name through the
real Dispatcher: `engine_test_plugins:Scripted`)."""

from __future__ import annotations

from qsmtp.plugins.api import HOOKS, Option, Plugin, Result

CALLS: list[str] = []  # Recorder appends every hook it sees (same process)


class Scripted(Plugin):
    """Answers `result` (+ `message`) at `hook`, or raises when `fail`."""

    options = {
        "hook": Option(str, "", "which hook acts"),
        "result": Option(str, "DECLINED", "Result name"),
        "message": Option(str, "", "reply text"),
        "fail": Option(bool, False, "raise instead"),
    }

    def act(self, hook: str):
        if hook != self.opts.hook:
            return None
        if self.opts.fail:
            raise RuntimeError("scripted failure")
        return Result[self.opts.result], self.opts.message or None


class Recorder(Plugin):
    """Records hook names in CALLS; decides nothing."""


def _make(hook: str, target: str):
    def method(self, session, *args):
        if target == "act":
            return self.act(hook)
        CALLS.append(hook)
        return None
    method.__name__ = f"hook_{hook}"
    return method


for _hook in HOOKS:
    setattr(Scripted, f"hook_{_hook}", _make(_hook, "act"))
    setattr(Recorder, f"hook_{_hook}", _make(_hook, "record"))


class RefuseSender(Plugin):
    """DENY at MAIL for one sender address."""

    options = {"sender": Option(str, "", "the sender refused")}

    def hook_mail(self, session, sender, params):
        return Result.DENY if sender.address == self.opts.sender else None
