"""`qsmtpctl import-qpsmtpd`: a qpsmtpd config directory -> a checked qsmtp.toml.

Three layers, each usable on its own:
- `reader`: reads the directory the way qpsmtpd's `Qpsmtpd::config` does
  (pure: files in, lines with their file and line number out);
- `mapping` / `plugins`: qpsmtpd files and plugin lines -> qsmtp keys,
  `[[plugins]]` tables and a report (carried over / dropped / needs a human);
- `writer`: the commented TOML; `command`: the click command.
"""
