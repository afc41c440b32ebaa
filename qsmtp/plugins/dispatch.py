"""Load the plugins once and run their hooks with a time budget.

Order: the `[[plugins]]` entries in file order, then the implied built-ins
(docs/REFERENCE.md "Built-ins are implied"): `relay` when `[relay]` is in the file,
`headers`, then `queue/<backend>`.  A built-in the user listed explicitly runs
where it was listed, with the user's options, and is not added a second time.

Plugin names:
- `relay`, `headers`, `queue/maildir` ... -> `qsmtp.plugins.builtin.<name
  with / as _>` (a few aliases, e.g. `queue/lmtp` lives in `queue_smtp`);
- `mypkg.mymod:MyPlugin` or `mypkg.mymod` -> a third-party module.
A module's plugin class is the one named by its `plugin_class` attribute, or
else the single `Plugin` subclass defined in it.
"""

from __future__ import annotations

import _signal
import importlib
import inspect
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any

from qsmtp.plugins.api import DECLINED_RESULT, HOOKS, HookResult, Plugin, PluginError, Result

if TYPE_CHECKING:
    from qsmtp.config import Config
    from qsmtp.smtp.state import Session


log = logging.getLogger("qsmtp.plugins")

BUILTIN_PACKAGE = "qsmtp.plugins.builtin"
# Built-in names whose module is not simply the name with "/" -> "_".
BUILTIN_ALIASES = {"queue/lmtp": "queue_smtp"}
FAILED_RESULT = HookResult(Result.DENYSOFT, "4.3.0 Temporary plugin failure", failed=True)
# After a timeout fires, keep interrupting every so often: a hook that
# swallows HookTimeout with a broad `except Exception` must not run forever.
_REPEAT = 0.05
_MAIN_THREAD = threading.main_thread().ident
# _signal.signal, not signal.signal: the latter's enum wrapping costs ~6 us a
# call, and every budgeted hook swaps the SIGALRM handler twice.
_SIGALRM = int(signal.SIGALRM)
_swap_handler = _signal.signal


class HookTimeout(Exception):
    """Raised inside a hook that overran server.hook_timeout."""


Call = tuple[str, Callable[..., Any]]  # (plugin name, bound hook method)


class Dispatcher:
    def __init__(self, plugins: list[Plugin], budget: float):
        self.plugins = plugins
        self.budget = float(budget)
        self._hooks: dict[str, tuple[Call, ...]] = {}
        unbudgeted = set()
        for hook in HOOKS:
            users = [p for p in plugins if hasattr(p, "hook_" + hook)]
            if users:
                self._hooks[hook] = tuple((p.name, getattr(p, "hook_" + hook)) for p in users)
                if not any(p.budgeted for p in users):
                    unbudgeted.add(hook)
        # The hooks with at least one plugin: the engine skips the others
        # without a call (most hooks of a message have none).
        self.hooked = frozenset(self._hooks)
        # Hooks whose plugins all declared `budgeted = False`: run without
        # the SIGALRM timer (two syscalls per call saved on every message).
        self._unbudgeted = frozenset(unbudgeted)
        self._armed = False  # a budgeted run() is in progress (no nesting)
        self.decided_by = ""  # the plugin whose result the last run() returned (logs)
        self._passthrough = _passthrough_exceptions()

    # -- loading ---------------------------------------------------------
    @classmethod
    def load(cls, config: Config) -> Dispatcher:
        """Instantiate every plugin (their setup() runs here). Raises PluginError."""
        entries = [(e["name"], {k: v for k, v in e.items() if k != "name"})
                   for e in config.plugins]
        listed = {name for name, _ in entries}
        implied = (["relay"] if config.has_section("relay") else []) + [
            "headers", f"queue/{config.queue.backend}"]
        for name in implied:
            if name not in listed:
                entries.append((name, {}))
        plugins = [instantiate(name, options, config) for name, options in entries]
        return cls(plugins, config.server.hook_timeout)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.plugins]

    def has(self, hook: str) -> bool:
        return hook in self._hooks

    # -- running ---------------------------------------------------------
    def run(self, hook: str, session: Session, *args: Any) -> HookResult:
        """Call `hook_<hook>(session, *args)` on each plugin in order; the
        first result other than DECLINED wins. Never raises for plugin bugs."""
        calls = self._hooks.get(hook)
        if not calls:
            return DECLINED_RESULT
        if (hook in self._unbudgeted or self._armed or self.budget <= 0
                or threading.get_ident() != _MAIN_THREAD):
            # Only in-memory plugins here; or a nested call from inside a hook
            # (the outer budget still applies); or a thread where signals
            # can't be used: no timer of our own.
            return self._run_calls(calls, hook, session, args, None)
        alarm = _Alarm(self.budget)
        self._armed = True
        alarm.install()
        try:
            return self._run_calls(calls, hook, session, args, alarm)
        finally:
            alarm.restore()
            self._armed = False

    def _run_calls(self, calls: tuple[Call, ...], hook: str, session: Session,
                   args: tuple[Any, ...], alarm: _Alarm | None) -> HookResult:
        for name, method in calls:
            result = self._call_one(name, method, hook, session, args, alarm)
            if result.result is not Result.DECLINED:
                self.decided_by = name
                return result
        return DECLINED_RESULT

    def _call_one(self, name: str, method: Callable[..., Any], hook: str, session: Session,
                  args: tuple[Any, ...], alarm: _Alarm | None) -> HookResult:
        try:
            if alarm is None:
                return HookResult.of(method(session, *args))
            try:
                alarm.start()  # inside the try: stop() always follows a start()
                value = method(session, *args)
            finally:
                alarm.stop()
            if alarm.fired:
                raise HookTimeout()  # the hook swallowed it and went on
            return HookResult.of(value)
        except self._passthrough:
            raise  # the worker's AbortSession: the engine handles it
        except HookTimeout:
            log.error("plugin %s hook %s session %s: overran its %gs budget",
                      name, hook, _sid(session), self.budget)
        except Exception as exc:
            log.error("plugin %s hook %s session %s: %s: %s", name, hook, _sid(session),
                      type(exc).__name__, exc, exc_info=True)
        return FAILED_RESULT


class _Alarm:
    """SIGALRM-based budget for one synchronous hook call at a time.

    Signal handlers elsewhere in qsmtp only set a flag.  This one raises on
    purpose: in a single-threaded worker, raising from a SIGALRM handler is
    the only way to interrupt a hook stuck in Python code or a blocking call.
    A timer someone else had armed (the worker's) is honoured: if it comes due
    during a hook its own handler runs, and it is re-armed afterwards.
    """

    __slots__ = ("budget", "prev_handler", "prev_deadline", "prev_interval", "active",
                 "fired")

    def __init__(self, budget: float):
        self.budget = budget
        self.active = self.fired = False
        self.prev_handler: Any = None
        self.prev_deadline: float | None = None
        self.prev_interval = 0.0

    def install(self) -> None:
        self.prev_handler = _swap_handler(_SIGALRM, self._fire)
        if not callable(self.prev_handler):
            # No handler of anyone's: no timer of anyone's to honour (qsmtp
            # arms one only with its handler installed). One syscall fewer
            # per hook run than reading the timer.
            return
        delay, self.prev_interval = signal.setitimer(signal.ITIMER_REAL, 0)
        self.prev_deadline = time.monotonic() + delay if delay > 0 else None

    def start(self) -> None:
        delay = self.budget
        if self.prev_deadline is not None:
            delay = max(min(delay, self.prev_deadline - time.monotonic()), 1e-4)
        self.active, self.fired = True, False
        signal.setitimer(signal.ITIMER_REAL, delay, _REPEAT)

    def stop(self) -> None:
        self.active = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    def restore(self) -> None:
        # The timer is already off: every start() is followed by a stop().
        _swap_handler(_SIGALRM, self.prev_handler)
        if self.prev_deadline is not None:
            left = max(self.prev_deadline - time.monotonic(), 1e-4)
            signal.setitimer(signal.ITIMER_REAL, left, self.prev_interval)

    def _fire(self, signum: int, frame: FrameType | None) -> None:
        if self.prev_deadline is not None and time.monotonic() >= self.prev_deadline:
            self.prev_deadline = None
            if callable(self.prev_handler):
                self.prev_handler(signum, frame)  # may raise (AbortSession)
        if self.active:
            self.fired = True
            raise HookTimeout()


def _sid(session: Session) -> str:
    return getattr(session, "id", None) or "-"


def _passthrough_exceptions() -> tuple[type[BaseException], ...]:
    """Exceptions that must cross the dispatcher untouched.  AbortSession is
    meant to be a BaseException (then `except Exception` already skips it);
    listing it here keeps that true even if it is ever an Exception.
    Imported here: the engine imports the plugin API, not the other way round
    at load time."""
    from qsmtp.smtp.control import AbortSession

    return (AbortSession,)


# -- finding plugin classes ----------------------------------------------
def _import(name: str) -> tuple[ModuleType, str | None]:
    if ":" in name:
        module_name, _, attr = name.partition(":")
    elif "." in name:
        module_name, attr = name, None
    else:
        module_name = BUILTIN_ALIASES.get(name, name.replace("/", "_"))
        module_name, attr = f"{BUILTIN_PACKAGE}.{module_name}", None
    try:
        return importlib.import_module(module_name), attr
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise PluginError(name, "name", f"no such plugin (module {module_name})") from None
        raise PluginError(name, "name", f"cannot import {module_name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - SyntaxError, errors at import time
        raise PluginError(name, "name",
                          f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None


def plugin_class(name: str) -> type[Plugin]:
    """The Plugin subclass a `[[plugins]]` name refers to. Raises PluginError."""
    module, attr = _import(name)
    chosen: object = attr or getattr(module, "plugin_class", None)
    found: object
    if isinstance(chosen, type):
        found = chosen
    elif chosen:
        found = getattr(module, str(chosen), None)
    else:
        defined = [obj for obj in vars(module).values()
                   if inspect.isclass(obj) and issubclass(obj, Plugin) and obj is not Plugin
                   and obj.__module__ == module.__name__]
        if len(defined) != 1:
            raise PluginError(name, "name", f"{module.__name__} defines {len(defined)} "
                              "Plugin classes; set plugin_class or use module:Class")
        found = defined[0]
    if not (inspect.isclass(found) and issubclass(found, Plugin)):
        raise PluginError(name, "name", f"{chosen!r} in {module.__name__} is not a Plugin")
    return found


def instantiate(name: str, options: dict[str, Any], config: Config) -> Plugin:
    cls = plugin_class(name)
    try:
        return cls(config, name, options)
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 - any bug in setup() is a load error (exit 78)
        raise PluginError(name, "setup", f"{type(exc).__name__}: {exc}") from None
