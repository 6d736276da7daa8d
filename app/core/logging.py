"""Logging for every Sluice process: plain or JSON lines, with job context.

The job a log line is about (job_id, run_id, attempt) travels in contextvars:
the worker sets them once per job and every record logged while the job runs
carries them, from the worker's own code or the handler's. Nothing here logs
payloads; `redact_url` strips passwords from URLs before they reach a log line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

job_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("job_id", default=None)
run_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("run_id", default=None)
attempt_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("attempt", default=None)

_CONTEXT = (("job_id", job_id_var), ("run_id", run_id_var), ("attempt", attempt_var))
# Attributes every LogRecord has; anything else was passed in `extra=` and is logged as a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


# A password in a libpq key=value string: quoted (with backslash escapes) or bare.
_CONNINFO_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)", re.IGNORECASE)


def redact_url(url: str | None) -> str | None:
    """`url` with any password replaced by `***` (also in a libpq `password=` query)."""
    if not url:
        return url
    if "://" not in url:  # a libpq key=value string: password='...' or password=...
        return _CONNINFO_PASSWORD.sub(r"\1***", url)
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = (
        "&".join(
            "password=***" if item.lower().startswith("password=") else item
            for item in parts.query.split("&")
        )
        if parts.query
        else parts.query
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def error_line(exc: BaseException) -> str:
    """`Type: first line of the message`: driver errors span several lines."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class ContextFilter(logging.Filter):
    """Copies the current job context onto each record (None outside a job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT:
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None}


class PlainFormatter(logging.Formatter):
    """`time level logger message key=value ...` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{when}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: "
        line += record.getMessage()
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        if extra:
            line = f"{line} [{extra}]"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(log_format: str = "plain", level: str = "INFO") -> None:
    """Send Sluice's logs to stderr in `log_format` (`plain` or `json`) at `level`."""
    if log_format not in ("plain", "json"):
        raise ValueError(f"SLUICE_LOG_FORMAT must be plain or json, not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else PlainFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Per-request chatter from the HTTP client would log webhook URLs.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
