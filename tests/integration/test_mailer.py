"""The SMTP mailer against the sandbox's SMTP sink, started in-process on a free port."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from penpay.adapters.mailer import MailNotSent, SmtpMailer
from penpay.sandbox.smtp import MailSink
from penpay.settings import Settings
from tests.ports import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def sink() -> AsyncIterator[MailSink]:
    mail = MailSink()
    await mail.start("127.0.0.1", 0)
    yield mail
    await mail.stop()


def mailer_for(sink: MailSink) -> SmtpMailer:
    settings = Settings(smtp_host="127.0.0.1", smtp_port=sink.port, _env_file=None)
    return SmtpMailer.from_settings(settings, timeout_s=2)


class TestSmtpMailer:
    async def test_a_mail_arrives_with_its_recipient_subject_body_and_sender(self, sink: MailSink) -> None:
        await mailer_for(sink).send(
            to="cr1234567@sandbox.deriv.test",
            subject="Your deposit is complete",
            body="KES 1,000 reached CR1234567 as USD 7.61.\n",
        )
        [mail] = sink.messages(to="cr1234567@sandbox.deriv.test")
        assert mail.subject == "Your deposit is complete"
        assert mail.to == ("cr1234567@sandbox.deriv.test",)
        assert mail.mail_from == "no-reply@penpay.local"  # PENPAY_MAIL_FROM's address
        assert mail.body == "KES 1,000 reached CR1234567 as USD 7.61.\n"

    async def test_each_send_is_its_own_message(self, sink: MailSink) -> None:
        mailer = mailer_for(sink)
        await mailer.send(to="a@example.test", subject="first", body="1")
        await mailer.send(to="b@example.test", subject="second", body="2")
        assert [(m.to, m.subject) for m in sink.messages()] == [
            (("a@example.test",), "first"),
            (("b@example.test",), "second"),
        ]

    async def test_the_ehlo_name_is_looked_up_once_not_per_message(
        self, sink: MailSink, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        lookups: list[str] = []

        def getfqdn(name: str = "") -> str:
            lookups.append(name)
            return "worker-1.penpay.local"

        monkeypatch.setattr(socket, "getfqdn", getfqdn)  # aiosmtplib would ask it for each message
        mailer = mailer_for(sink)
        for n in range(3):
            await mailer.send(to=f"u{n}@example.test", subject="hello", body="x")
        assert len(sink.messages()) == 3
        assert len(lookups) == 1

    async def test_an_unreachable_server_raises_mail_not_sent(self) -> None:
        mailer = SmtpMailer(host="127.0.0.1", port=free_port(), mail_from="x@penpay.local", timeout_s=1)
        with pytest.raises(MailNotSent):
            await mailer.send(to="a@example.test", subject="lost?", body="no: retried by the consumer")

    async def test_header_injection_is_refused(self, sink: MailSink) -> None:
        with pytest.raises(ValueError, match="line break"):
            await mailer_for(sink).send(to="a@example.test\nBcc: all@example.test", subject="hi", body="x")
        assert sink.messages() == []
