"""The plugin API, modelled on qpsmtpd's.

A plugin is a class deriving from `Plugin`. Methods named `hook_<name>` are
registered automatically (hook names use `_` where qpsmtpd used `-`:
`hook_pre_connection`). A hook returns a `Result`, a `(Result, message)` pair,
or None (same as DECLINED); a `HookResult(DENY, "5.7.1 text", code=552)`
when a refusal needs a reply code other than its stage's default. Options
come from the plugin's `[[plugins]]` table and are declared in `options`;
unknown or ill-typed options fail at load time.

    class Greeter(Plugin):
        '''Says hello in the logs.'''
        options = {"greeting": Option(str, "hi", "what to log")}

        def hook_helo(self, session: Session, host: str) -> HookReturn:
            session.notes["greeted"] = self.opts.greeting
            return Result.DECLINED
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qsmtp.config import Config
    from qsmtp.smtp.message import MessageBody
    from qsmtp.smtp.state import Session, Transaction



class Result(enum.Enum):
    OK = "OK"
    DENY = "DENY"
    DENYSOFT = "DENYSOFT"
    DENY_DISCONNECT = "DENY_DISCONNECT"
    DENYSOFT_DISCONNECT = "DENYSOFT_DISCONNECT"
    DECLINED = "DECLINED"
    DONE = "DONE"


OK, DENY, DENYSOFT = Result.OK, Result.DENY, Result.DENYSOFT
DENY_DISCONNECT, DENYSOFT_DISCONNECT = Result.DENY_DISCONNECT, Result.DENYSOFT_DISCONNECT
DECLINED, DONE = Result.DECLINED, Result.DONE


@dataclass(frozen=True)
class HookResult:
    result: Result
    message: str | None = None
    # True when the plugin raised or overran its budget: 451 4.3.0 at any
    # stage, and the worker retires after the session.
    failed: bool = False
    # A refusal's reply code when the stage default isn't the right one
    # (552 for a virus at DATA); ignored unless of the refusal's class.
    code: int | None = None

    @classmethod
    def of(cls, value: Any) -> HookResult:
        """Normalise what a hook returned; anything odd is a plugin bug."""
        if value is None:
            return DECLINED_RESULT
        if isinstance(value, HookResult):
            return value
        if isinstance(value, Result):
            return cls(value)
        if (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], Result)
                and (value[1] is None or isinstance(value[1], str))):
            return cls(value[0], value[1])
        raise TypeError(f"hook returned {value!r}; expected Result or (Result, message)")


DECLINED_RESULT = HookResult(Result.DECLINED)

# The ESMTP parameters of MAIL and RCPT (`SIZE=1000` -> {"SIZE": "1000"}).
Params = dict[str, str | None]
# What a hook may return (HookResult.of normalises it).
HookReturn = Result | tuple[Result, str | None] | HookResult | None


def transaction_of(session: Session) -> Transaction:
    """The current transaction, for the hooks that run inside one (mail to
    queue_post, where the engine always has one)."""
    txn = session.transaction
    if txn is None:
        raise RuntimeError(f"session {session.id}: no transaction at this stage")
    return txn


def body_of(txn: Transaction) -> MessageBody:
    """The received message, for the hooks that run after DATA."""
    if txn.body is None:
        raise RuntimeError(f"transaction {txn.id}: no message yet")
    return txn.body

# Hook name -> the arguments passed after `session`, in firing order.
# Every hook is called as `plugin.hook_<name>(session, *args)`; the current
# transaction is `session.transaction`.
HOOKS: dict[str, tuple[str, ...]] = {
    "pre_connection": (),
    "connect": (),
    "helo": ("host",),
    "ehlo": ("host",),
    "mail": ("sender", "params"),
    "rcpt": ("recipient", "params"),
    "data": (),
    "data_headers_end": (),
    "data_post": (),
    "queue_pre": (),
    "queue": (),
    "queue_post": (),
    "vrfy": ("argument",),
    "noop": (),
    "quit": (),
    "reset_transaction": (),
    "disconnect": (),
    "post_connection": (),
    "unrecognized_command": ("verb", "argument"),
    "auth": ("mechanism", "user", "secret"),
}


class PluginError(Exception):
    """A plugin cannot be loaded: bad option, unknown hook, import failure."""

    def __init__(self, plugin: str, key: str, reason: str):
        super().__init__(f"{plugin}: {key}: {reason}")
        self.plugin, self.key, self.reason = plugin, key, reason


@dataclass(frozen=True)
class Option:
    type: type  # int, float, bool, str, list
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    # (low, high) for numbers; without it a number must still be finite and
    # fit in 32 bits, so no option can make a plugin wait or allocate forever.
    bounds: tuple[float, float] | None = None


class Plugin:
    """Base class. Subclasses set `options` and define `hook_*` methods.

    `self.config` is the server Config (read-only), `self.opts` the validated
    options, `self.log` a logger named after the plugin. `setup()` runs once
    at load time in the supervisor, before workers fork: do expensive loading
    there, and raise PluginError for anything wrong.
    """

    name: str = ""
    options: Mapping[str, Option] = {}
    # Whether server.hook_timeout's SIGALRM timer guards this plugin's hooks.
    # A plugin that can wait on anything (DNS, network, a state backend, a
    # lock) keeps the default. Only a plugin whose hooks compute in memory,
    # or make local file syscalls no signal can interrupt anyway, sets False:
    # arming and disarming the timer costs two syscalls per hook call.
    budgeted: bool = True

    def __init__(self, config: Config, name: str, options: Mapping[str, Any]):
        self.config = config
        self.name = name
        self.log = logging.getLogger(f"qsmtp.plugin.{name}")
        self.opts = SimpleNamespace(**self._validate(options))
        for attr in dir(type(self)):
            if attr.startswith("hook_") and attr[5:] not in HOOKS:
                raise PluginError(name, attr, f"unknown hook '{attr[5:]}'")
        self.setup()

    def _validate(self, given: Mapping[str, Any]) -> dict[str, Any]:
        values = {key: opt.default for key, opt in self.options.items()}
        for key, value in given.items():
            opt = self.options.get(key)
            if opt is None:
                raise PluginError(self.name, key, "unknown option")
            values[key] = _check_option(self.name, key, opt, value)
        return values

    def setup(self) -> None:
        """Load-time initialisation; override as needed."""


def _check_option(plugin: str, key: str, opt: Option, value: Any) -> Any:
    if opt.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if opt.type is list:
        ok = isinstance(value, list)
    elif opt.type is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, opt.type)
    if not ok:
        raise PluginError(plugin, key, f"must be {opt.type.__name__} (got {value!r})")
    if opt.choices is not None and value not in opt.choices:
        raise PluginError(plugin, key, f"must be one of {', '.join(map(str, opt.choices))}")
    if opt.type in (int, float) and value is not None:
        low, high = opt.bounds or (-INT_LIMIT, INT_LIMIT)
        if not (math.isfinite(value) and low <= value <= high):
            raise PluginError(plugin, key, f"must be between {low:g} and {high:g} "
                              f"(got {value!r})")
    return value


INT_LIMIT = (1 << 31) - 1  # the fallback bound of a number option
