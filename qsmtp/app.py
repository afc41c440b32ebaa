"""Everything a worker needs to serve, loaded once in the supervisor before fork."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from qsmtp import state
from qsmtp.config import Config, ConfigError
from qsmtp.plugins.api import PluginError

if TYPE_CHECKING:
    import ssl

    from qsmtp.plugins.dispatch import Dispatcher


@dataclass
class App:
    config: Config
    plugins: Dispatcher
    tls_context: ssl.SSLContext | None

    @classmethod
    def load(cls, config: Config) -> App:
        """Build plugins and TLS; every failure is a ConfigError (exit 78)."""
        from qsmtp.plugins.dispatch import Dispatcher

        source = config.path or "command line"
        try:
            plugins = Dispatcher.load(config)
        except PluginError as exc:
            raise ConfigError(source, f"plugins.{exc.plugin}.{exc.key}", exc.reason) from None
        if plugins.has("auth"):
            # AUTH's failure limit opens its [state] store in the worker, at
            # the first AUTH: the backend's modules are imported here instead.
            state.preload(config)
        return cls(config=config, plugins=plugins, tls_context=_tls_context(config, source))


def _tls_context(config: Config, source: str) -> ssl.SSLContext | None:
    if not config.tls.cert:
        return None
    import ssl  # only with TLS configured: ~1.5 MB less in every process otherwise

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # OpenSSL's errors name neither the file nor the key: open each first.
    for key, path in (("tls.cert", config.tls.cert), ("tls.key", config.tls.key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(source, key,
                              f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        context.load_cert_chain(config.tls.cert, config.tls.key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(source, "tls.cert", f"cannot load certificate/key: {exc}") from None
    return context
