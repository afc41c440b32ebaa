"""qsmtp: a pre-forking, socket-activated SMTP server."""

__version__ = "0.1.0"
