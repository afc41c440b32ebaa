"""An AUTH backend for the auth_*.txt transcripts (loaded by name through
the real Dispatcher): alice/s3cret is good, `temp` can't be checked now
(454), `gone` makes the plugin raise (454 too), anyone else is unknown."""

from __future__ import annotations

from qsmtp.plugins.builtin._auth import AuthBackend, TempFail


class AuthTest(AuthBackend):
    def check(self, session, user, password):
        if user == "temp":
            raise TempFail("scripted temporary failure")
        if user == "gone":
            raise RuntimeError("scripted plugin bug")
        if user == "alice":
            return password == "s3cret"
        return None
