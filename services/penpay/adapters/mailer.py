"""E-mail notifications over SMTP (aiosmtplib): the ``ports.Mailer`` adapter.

Sending: the mails of a batch (``send_many``: a notification step's, one per transaction) share SMTP sessions, up
to ``MAILS_PER_SESSION`` each, the sessions side by side: SMTP carries any number of transactions (MAIL, RCPT, DATA)
on one connection, so a batch pays the connect, the greeting, EHLO (and STARTTLS and AUTH with a real relay) and
QUIT once a session instead of once a mail (a withdrawal burst's mail was ~12 % of the worker's CPU and ~17 % of
the sandbox's with a connection each). No session outlives its batch: one kept between batches would go stale
while notifications are rare. A mail the server refuses (its recipient, its size) fails alone: the session resets
the envelope (aiosmtplib sends RSET) and goes on with the next. A session that breaks (disconnect, timeout, a 421)
leaves its unsent mails to a new session if it had sent at least one (a server's limit of mails a connection, say);
one that sent none fails them all. The mail in flight when a session broke may have been taken (its answer lost):
it is sent again, the at-least-once the notifier promises anyway. A timeout on every SMTP step and a deadline on
the connect and on each mail. The name this host gives in EHLO is looked up once (without it, aiosmtplib asks
``socket.getfqdn()`` in a thread for every session, a DNS lookup each time).

Composing: a message is what ``EmailMessage`` (the default policy) writes from the plain strings. That policy parses
every header it is given and folds each again when the message is written, ~1.3 ms of the worker's CPU a message on
a slow machine (a withdrawal's worker CPU was ~5 ms in all). Nearly every notification is plain ASCII: a simple
address, one of a few subjects, short lines of text. Such a message is built as a ``compat32`` message with the
same headers, in the same order, with the same values, which writes the same bytes to the wire in a fifth of the time
(the unit tests compare the wire bytes of both ways, including on generated input). Anything else (a non-ASCII
character, a line longer than 78 characters or one that starts with "From ", an address that is not a plain
``local@domain``) takes the ``EmailMessage`` way. The sender and the subjects it does parse are parsed once
(``repeated_header``).

A failure raises :class:`MailNotSent`: the notifier's stream consumer leaves the message pending and retries it
later, so a down mail server delays mail but loses none.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import re
import socket
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy
from email.headerregistry import BaseHeader
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Self

import aiosmtplib

from penpay.logging import get_logger
from penpay.settings import Settings
from penpay_domain import ports

log = get_logger(__name__)
MAILS_PER_SESSION = 8  # a batch of 64 mails: 8 sessions side by side, each sending 8 one after another
SERVICE_CLOSING = 421  # the server is ending the session (RFC 5321 4.2.3): what is left needs a new one


@functools.lru_cache(maxsize=256)
def repeated_header(name: str, value: str) -> BaseHeader:
    """A header as ``EmailMessage`` would parse it (the default policy), parsed once per name and value; a parsed
    header is immutable, so one serves every message that carries it."""
    header: BaseHeader = policy.default.header_factory(name, value)
    return header


# RFC 5322's dot-atom local part @ a domain of letters, digits, dots and hyphens: rendered as given by either way
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
_LINE = 78  # the default policy's max_line_length: a longer header is folded, a longer body line encoded


def _plain_address(to: str) -> bool:
    return _PLAIN_ADDRESS.fullmatch(to) is not None and len("To: ") + len(to) <= _LINE


def _plain_body(body: str) -> list[bytes] | None:
    """The body's lines as ``set_content`` splits them, if it would send them as they are (7bit): ASCII lines of at
    most 78 characters; and none starting with "From ", which the compat32 writer would quote."""
    if not body.isascii():
        return None
    lines = body.encode().splitlines()
    return None if any(len(line) > _LINE or line.startswith(b"From ") for line in lines) else lines


def _plain_header(name: str, value: str) -> bool:
    """``value`` is written as given by both ways: printable ASCII, unfolded, trimmed, and rendered back unchanged
    once parsed."""
    return (
        value.isascii()
        and value.isprintable()
        and value == value.strip()
        and value != ""
        and len(name) + 2 + len(value) <= _LINE
        and str(repeated_header(name, value)) == value
    )


def _plain_message(headers: dict[str, str], lines: list[bytes]) -> Message:
    """A ``compat32`` message with the headers, in the order and with the values ``EmailMessage`` gives a plain
    ASCII text: the given ones, then the three ``set_content`` adds; the body as ``set_content`` writes it (7bit)."""
    message = Message()
    for name, value in (
        *headers.items(),
        ("Content-Type", 'text/plain; charset="utf-8"'),
        ("Content-Transfer-Encoding", "7bit"),
        ("MIME-Version", "1.0"),
    ):
        message[name] = value
    message.set_payload(b"\n".join(lines).decode() + "\n")
    return message


_Queued = tuple[int, ports.Mail, Message]  # a mail's place in the batch, the mail, the message composed from it


class MailNotSent(Exception):
    """The SMTP server could not be reached or refused the message."""


def _not_sent(what: str, cause: BaseException) -> MailNotSent:
    """A mail's failure, with the SMTP error that ended it as its cause (it is raised or logged later)."""
    error = MailNotSent(f"{what}: {cause!r}")
    error.__cause__ = cause
    return error


class SmtpMailer:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        mail_from: str,
        timeout_s: float = 10.0,
        start_tls: bool | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        """``start_tls=None`` upgrades when the server offers STARTTLS (the sandbox sink does not)."""
        self._host = host
        self._port = port
        self._from = mail_from
        self._timeout_s = timeout_s
        self._start_tls = start_tls
        self._username = username
        self._password = password
        self._local_hostname: str | None = None  # for EHLO: looked up on the first send
        self._domain = parseaddr(mail_from)[1].rpartition("@")[2] or None  # of the Message-IDs
        self._plain_from = _plain_header("From", mail_from)  # the sender allows the quick way (module docstring)

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout_s: float = 10.0) -> Self:
        return cls(host=settings.smtp_host, port=settings.smtp_port, mail_from=settings.mail_from, timeout_s=timeout_s)

    def compose(self, *, to: str, subject: str, body: str) -> Message:
        """The message to send: the quick way when its strings allow, else ``EmailMessage`` (the module docstring)."""
        if "\n" in to or "\r" in to or "\n" in subject or "\r" in subject:
            raise ValueError("a recipient or subject with a line break would inject headers")
        date = format_datetime(datetime.now(UTC))
        message_id = make_msgid(domain=self._domain)
        lines = _plain_body(body)
        if lines is not None and self._plain_from and _plain_address(to) and _plain_header("Subject", subject):
            return _plain_message(
                {"From": self._from, "To": to, "Subject": subject, "Date": date, "Message-ID": message_id}, lines
            )
        message = EmailMessage()
        message["From"] = repeated_header("From", self._from)
        message["To"] = to
        message["Subject"] = repeated_header("Subject", subject)
        message["Date"] = date
        message["Message-ID"] = message_id
        message.set_content(body)
        return message

    async def send(self, *, to: str, subject: str, body: str) -> None:
        [outcome] = await self.send_many([ports.Mail(to=to, subject=subject, body=body)])
        if outcome is not None:
            raise outcome

    async def send_many(self, mails: Sequence[ports.Mail]) -> list[Exception | None]:
        """Each mail's outcome, in order: None once the server took it, :class:`MailNotSent` when it did not, the
        ``ValueError`` of a mail that cannot be composed (its line breaks)."""
        outcomes: list[Exception | None] = [None] * len(mails)
        queued: list[_Queued] = []
        for n, mail in enumerate(mails):
            try:
                queued.append((n, mail, self.compose(to=mail.to, subject=mail.subject, body=mail.body)))
            except ValueError as exc:
                outcomes[n] = exc
        if not queued:
            return outcomes
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        sessions = math.ceil(len(queued) / MAILS_PER_SESSION)
        await asyncio.gather(*(self._deliver(deque(queued[i::sessions]), outcomes) for i in range(sessions)))
        return outcomes

    async def _deliver(self, pending: deque[_Queued], outcomes: list[Exception | None]) -> None:
        """``pending``'s mails over as many sessions as it takes, each taking up to ``MAILS_PER_SESSION``; a session
        that breaks before sending any fails the rest (the module docstring)."""
        while pending:
            before = len(pending)
            try:
                await self._session(pending, outcomes)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                if len(pending) < before:
                    log.info("mail_session_broken", left=len(pending), error=repr(exc))
                    continue
                for n, mail, _ in pending:
                    outcomes[n] = _not_sent(f"mail to {mail.to!r} not sent via {self._host}:{self._port}", exc)
                return

    async def _session(self, pending: deque[_Queued], outcomes: list[Exception | None]) -> None:
        """One SMTP session: up to ``MAILS_PER_SESSION`` of ``pending``, taken from its front as each is answered."""
        smtp = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            timeout=self._timeout_s,
            start_tls=self._start_tls,
            username=self._username,
            password=self._password,
            local_hostname=self._local_hostname,
        )
        deadline = self._timeout_s * 3  # connect, hello and data each have their own timeout too
        try:
            async with asyncio.timeout(deadline):
                await smtp.connect()
            for _ in range(min(MAILS_PER_SESSION, len(pending))):
                n, mail, message = pending[0]
                try:
                    async with asyncio.timeout(deadline):
                        await smtp.send_message(message)
                except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPResponseException) as exc:
                    if not smtp.is_connected or getattr(exc, "code", None) == SERVICE_CLOSING:
                        raise
                    outcomes[n] = _not_sent(f"mail to {mail.to!r} refused by {self._host}:{self._port}", exc)
                except (aiosmtplib.SMTPNotSupported, ValueError) as exc:  # refused before a word was sent
                    outcomes[n] = _not_sent(f"mail to {mail.to!r} cannot be sent", exc)
                else:
                    log.info("mail_sent", subject=mail.subject)
                pending.popleft()
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):  # every mail was answered
                async with asyncio.timeout(self._timeout_s):
                    await smtp.quit()
        finally:
            smtp.close()


_: ports.Mailer = SmtpMailer(host="localhost", port=25, mail_from="conformance@penpay.local")
