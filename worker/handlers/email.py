"""`email`: sends `{"to": [...], "subject": "...", "body": "..."}` (sluice.core.tasks.
EmailPayload) through the SMTP server of SLUICE_SMTP_URL, with the standard
library's smtplib in a thread.

SLUICE_SMTP_URL: `smtp://[user:pass@]host[:port][?starttls=1]` or
`smtps://[user:pass@]host[:port]` (TLS from the start). A refused recipient fails
the job at once; a server that cannot be reached or answers 4xx is retried.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from sluice.core.config import parse_bool
from sluice.core.tasks import EmailPayload
from sluice.worker.context import JobContext, TaskError
from sluice.worker.handlers.common import FinalTaskError, head, payload_of
from sluice.worker.registry import task

if TYPE_CHECKING:
    # Imported when an email is sent: a few ms of every worker's start-up otherwise.
    import smtplib

SMTP_TIMEOUT = 30.0


class EmailError(TaskError):
    """A retryable SMTP failure (unreachable server, temporary refusal)."""


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    tls: bool
    starttls: bool
    user: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise FinalTaskError(
                "email: SLUICE_SMTP_URL must look like smtp://host:port or smtps://host"
            )
        query = parse_qs(parts.query)
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if tls else 25),
            tls=tls,
            starttls=parse_bool(query.get("starttls", ["0"])[0]),
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def send(self, message: EmailMessage) -> None:
        """Blocking: connect, log in if configured, send."""
        import smtplib

        context = ssl.create_default_context()
        smtp_class = smtplib.SMTP_SSL if self.tls else smtplib.SMTP
        kwargs: dict[str, Any] = {"context": context} if self.tls else {}
        with smtp_class(self.host, self.port, timeout=SMTP_TIMEOUT, **kwargs) as smtp:
            if self.starttls:
                smtp.starttls(context=context)
            if self.user:
                smtp.login(self.user, self.password or "")
            smtp.send_message(message)


def _said(exc: smtplib.SMTPResponseException) -> str:
    """The server's code and words, for the job's error."""
    words = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else ""
    return f"{exc.smtp_code} {head(words, 200)}".strip()


def _deliver(server: SmtpServer, message: EmailMessage) -> None:
    import smtplib

    try:
        server.send(message)
    except smtplib.SMTPRecipientsRefused as exc:
        raise FinalTaskError(f"email: recipients refused: {', '.join(exc.recipients)}") from None
    except smtplib.SMTPAuthenticationError as exc:
        raise FinalTaskError(f"email: SMTP login refused: {_said(exc)}") from None
    except smtplib.SMTPResponseException as exc:
        if 500 <= exc.smtp_code < 600:
            raise FinalTaskError(f"email: the SMTP server refused: {_said(exc)}") from None
        raise EmailError(f"email: the SMTP server answered {_said(exc)}") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise EmailError(
            f"email: cannot send through the SMTP server: {type(exc).__name__}: {exc}"
        ) from None


@task(name="email")
async def email(payload: Any, ctx: JobContext) -> dict[str, Any]:
    if not ctx.settings.smtp_url:
        raise FinalTaskError(
            "email: no SMTP server configured on this worker (set SLUICE_SMTP_URL)"
        )
    server = SmtpServer.from_url(ctx.settings.smtp_url)
    mail = payload_of("email", payload, EmailPayload)
    message = EmailMessage()
    message["From"] = ctx.settings.smtp_from
    message["To"] = ", ".join(mail.to)
    message["Subject"] = mail.subject
    message.set_content(mail.body)
    await asyncio.to_thread(_deliver, server, message)
    return {"to": mail.to}
