"""The built-in handlers of the SPEC; importing this package registers them."""

from sluice.worker.handlers import email, http, noop, shell, sleep, webhook

__all__ = ["email", "http", "noop", "shell", "sleep", "webhook"]
