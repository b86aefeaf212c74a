"""The sandbox's SMTP sink: accepts every message (aiosmtpd) and keeps it in memory for the control API.

It runs in the sandbox's own asyncio loop (``loop.create_server`` with aiosmtpd's protocol), not in aiosmtpd's
``Controller`` thread, so one loop owns every server and one signal stops them all.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from aiosmtpd.smtp import SMTP, Envelope, Session

from penpay.logging import get_logger
from penpay.sandbox.listening import LISTEN_BACKLOG

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    """A message as it arrived. Its subject and text are parsed when read, not on arrival: few of the mails a
    benchmark sends are ever read, and parsing one in full (``policy.default``) costs ~0.7 ms of the sandbox's
    CPU, about a sixteenth of a withdrawal's on the benchmark machine (docs/performance.md, round 19)."""

    mail_from: str
    to: tuple[str, ...]
    content: bytes
    received_at: dt.datetime

    def _read(self) -> tuple[str, str]:
        """The subject and the text, parsed now (``policy.default``: encoded words decoded, plain text first)."""
        parsed = BytesParser(policy=policy.default).parsebytes(self.content)
        message = parsed if isinstance(parsed, EmailMessage) else EmailMessage()
        return str(message.get("Subject", "")), _text_body(message)

    @property
    def subject(self) -> str:
        return self._read()[0]

    @property
    def body(self) -> str:
        return self._read()[1]

    def as_json(self) -> dict[str, object]:
        subject, body = self._read()
        return {
            "from": self.mail_from,
            "to": list(self.to),
            "subject": subject,
            "body": body,
            "received_at": self.received_at.isoformat(),
        }


def _text_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    content = part.get_content()
    # SMTP carries CRLF line ends; readers of the sink want the text as it was written.
    return content.replace("\r\n", "\n") if isinstance(content, str) else ""


class MailSink:
    """An SMTP server that never delivers: it records (from, to, subject, body, received_at) of each message."""

    def __init__(self, *, max_messages: int = 10_000) -> None:
        self._messages: list[ReceivedMail] = []
        self._max = max_messages
        self._server: asyncio.Server | None = None

    # aiosmtpd calls this for each message once DATA ends.
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content or b""
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            to=tuple(envelope.rcpt_tos),
            content=raw if isinstance(raw, bytes) else raw.encode("utf-8"),
            received_at=dt.datetime.now(dt.UTC),
        )
        self._messages.append(mail)
        del self._messages[: -self._max]
        log.info("mail_received", to=list(mail.to), size=len(mail.content))
        return "250 Message accepted for delivery"

    def messages(self, to: str | None = None) -> list[ReceivedMail]:
        """Received messages, oldest first; ``to`` keeps those with that recipient (case-insensitive)."""
        if to is None:
            return list(self._messages)
        wanted = to.lower()
        return [m for m in self._messages if any(r.lower() == wanted for r in m.to)]

    def clear(self) -> None:
        self._messages.clear()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="penpay-sandbox", loop=loop), host=host, port=port, backlog=LISTEN_BACKLOG
        )

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the SMTP sink is not running")
        address: tuple[str, int] = self._server.sockets[0].getsockname()[:2]
        return address[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
