"""E-mail notifications over SMTP (aiosmtplib): the ``ports.Mailer`` adapter.

One connection per message (notifications are rare and a pooled SMTP session would go stale between them), a
timeout on every SMTP step and one overall deadline. The name this host gives in EHLO is looked up once (without
it, aiosmtplib asks ``socket.getfqdn()`` in a thread for every message, a DNS lookup each time). The headers that
repeat from message to message (the sender, the few subjects) are parsed once: the ``email`` package parses every
header it is given, and that was two fifths of composing a message (~0.5 ms of the worker's CPU per notification
on a slow machine). A failure raises :class:`MailNotSent`: the notifier's stream consumer leaves the message
pending and retries it later, so a down mail server delays mail but loses none.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from email import policy
from email.headerregistry import BaseHeader
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Self

import aiosmtplib

from penpay.logging import get_logger
from penpay.settings import Settings
from penpay_domain import ports

log = get_logger(__name__)


@functools.lru_cache(maxsize=256)
def repeated_header(name: str, value: str) -> BaseHeader:
    """A header as ``EmailMessage`` would parse it (the default policy), parsed once per name and value; a parsed
    header is immutable, so one serves every message that carries it."""
    header: BaseHeader = policy.default.header_factory(name, value)
    return header


class MailNotSent(Exception):
    """The SMTP server could not be reached or refused the message."""


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

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout_s: float = 10.0) -> Self:
        return cls(host=settings.smtp_host, port=settings.smtp_port, mail_from=settings.mail_from, timeout_s=timeout_s)

    def compose(self, *, to: str, subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = repeated_header("From", self._from)
        message["To"] = to
        message["Subject"] = repeated_header("Subject", subject)
        message["Date"] = formatdate(localtime=False, usegmt=True)
        domain = parseaddr(self._from)[1].rpartition("@")[2] or None
        message["Message-ID"] = make_msgid(domain=domain)
        message.set_content(body)
        return message

    async def send(self, *, to: str, subject: str, body: str) -> None:
        if "\n" in to or "\r" in to or "\n" in subject or "\r" in subject:
            raise ValueError("a recipient or subject with a line break would inject headers")
        message = self.compose(to=to, subject=subject, body=body)
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        try:
            async with asyncio.timeout(self._timeout_s * 3):  # connect, hello and data each have their own timeout
                await aiosmtplib.send(
                    message,
                    hostname=self._host,
                    port=self._port,
                    timeout=self._timeout_s,
                    start_tls=self._start_tls,
                    username=self._username,
                    password=self._password,
                    local_hostname=self._local_hostname,
                )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise MailNotSent(f"mail to {to!r} not sent via {self._host}:{self._port}: {exc!r}") from exc
        log.info("mail_sent", subject=subject)


_: ports.Mailer = SmtpMailer(host="localhost", port=25, mail_from="conformance@penpay.local")
