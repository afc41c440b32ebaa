"""subject_guard -- refuse messages whose Subject: matches a pattern; tag the rest.

The worked example of docs/PLUGINS.md (its test:
tests/integration/test_example_plugin.py).  Load it from any directory on
the server's PYTHONPATH:

    [[plugins]]
    name = "subject_guard:SubjectGuard"
    patterns = ["(?i)\\bviagra\\b", "^\\[SPAM\\]"]

Options:
- `patterns` (list of regular expressions, required): a Subject: matching
  any of them is refused.
- `action` (`deny` | `denysoft`, default `deny`): 554 or 451 at end of DATA.
- `tag_header` (default `X-Subject-Guard`): added to accepted messages
  (`checked`); `""` adds nothing.
"""

from __future__ import annotations

import email.parser
import email.policy
import re

from qsmtp.plugins.api import DENY, DENYSOFT, Option, Plugin, PluginError


class SubjectGuard(Plugin):
    """Refuses messages by Subject: pattern; tags the ones it let through."""

    options = {
        "patterns": Option(list, [], "regular expressions matched against Subject:"),
        "action": Option(str, "deny", "what a match does", choices=("deny", "denysoft")),
        "tag_header": Option(str, "X-Subject-Guard", "header added to accepted mail"),
    }

    def setup(self) -> None:
        # Runs once in the supervisor, before workers fork: validate and
        # precompute here; a PluginError stops the start with exit 78.
        if not self.opts.patterns:
            raise PluginError(self.name, "patterns", "at least one pattern is required")
        self.patterns = []
        for pattern in self.opts.patterns:
            try:
                self.patterns.append(re.compile(pattern))
            except (re.error, TypeError) as exc:
                raise PluginError(self.name, "patterns", f"{pattern!r}: {exc}") from None

    def hook_data_headers_end(self, session):
        # The header section is complete; the body is still arriving.  A
        # refusal here is sent once the whole message has been read.
        txn = session.transaction
        parser = email.parser.BytesParser(policy=email.policy.compat32)
        subject = str(parser.parsebytes(txn.body.header_block, headersonly=True)
                      .get("Subject", ""))
        for pattern in self.patterns:
            if pattern.search(subject):
                txn.notes["subject_guard"] = pattern.pattern  # for later plugins / logs
                self.log.info("session %s: subject matches %s", session.id, pattern.pattern)
                result = DENY if self.opts.action == "deny" else DENYSOFT
                code = "5.7.1" if result is DENY else "4.7.1"
                return result, f"{code} Message refused by subject policy"
        return None  # DECLINED: let the other plugins decide

    def hook_data_post(self, session):
        # Only reached when no data_headers_end hook refused the message.
        if self.opts.tag_header:
            session.transaction.prepend_header(self.opts.tag_header, "checked")
        return None
