"""The SMTP mailer against the sandbox's SMTP sink, started in-process on a free port."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import AsyncIterator

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from penpay.adapters.mailer import MAILS_PER_SESSION, MailNotSent, SmtpMailer
from penpay.sandbox.smtp import MailSink
from penpay.settings import Settings
from penpay_domain.ports import Mail
from tests.ports import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def sink() -> AsyncIterator[MailSink]:
    mail = MailSink()
    await mail.start("127.0.0.1", 0)
    yield mail
    await mail.stop()


class PickySink(MailSink):
    """The sandbox's sink, with what real servers also do: it refuses some recipients, ends a session after a few
    mails (421), and says over which connection each mail came."""

    def __init__(self, *, refuse: frozenset[str] = frozenset(), mails_per_session: int | None = None) -> None:
        super().__init__()
        self.refuse = refuse
        self.mails_per_session = mails_per_session  # None: no limit; 0: every DATA is answered 421
        self.peers: list[object] = []  # each accepted mail's client address: one per connection
        self.taken: Counter[object] = Counter()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.mails_per_session is not None and self.taken[session.peer] >= self.mails_per_session:
            return "421 4.7.0 too many mails on one connection, closing"
        self.taken[session.peer] += 1
        self.peers.append(session.peer)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
async def picky() -> AsyncIterator[PickySink]:
    mail = PickySink(refuse=frozenset({"nobody@example.test"}), mails_per_session=3)
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


class TestABatchOfMails:
    async def test_every_mail_arrives_once_with_its_own_recipient_subject_and_body(self, sink: MailSink) -> None:
        mails = [Mail(to=f"u{n}@example.test", subject=f"deposit {n}", body=f"body {n}\n") for n in range(20)]
        assert await mailer_for(sink).send_many(mails) == [None] * 20
        got = sorted((m.to, m.subject, m.body) for m in sink.messages())
        assert got == sorted(((m.to,), m.subject, m.body) for m in mails)

    async def test_the_mails_share_sessions_instead_of_a_connection_each(self, sink: MailSink) -> None:
        picky = PickySink()
        await picky.start("127.0.0.1", 0)
        try:
            mails = [Mail(to=f"u{n}@example.test", subject="s", body="b") for n in range(2 * MAILS_PER_SESSION + 1)]
            assert await mailer_for(picky).send_many(mails) == [None] * len(mails)
        finally:
            await picky.stop()
        assert len(picky.peers) == len(mails)
        assert len(set(picky.peers)) == 3  # ceil(17 / 8) sessions, side by side
        assert max(picky.taken.values()) <= MAILS_PER_SESSION

    async def test_a_refused_recipient_fails_alone_and_the_session_goes_on(self, picky: PickySink) -> None:
        picky.mails_per_session = None
        to = ["a@example.test", "nobody@example.test", "b@example.test"]
        outcomes = await mailer_for(picky).send_many([Mail(to=t, subject="s", body="b") for t in to])
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], MailNotSent) and "nobody@example.test" in str(outcomes[1])
        assert isinstance(outcomes[1].__cause__, aiosmtplib.SMTPRecipientsRefused)  # what the server said, kept
        assert sorted(m.to for m in picky.messages()) == [("a@example.test",), ("b@example.test",)]
        assert len(set(picky.peers)) == 1  # one session carried all three

    async def test_a_session_the_server_ends_hands_its_unsent_mails_to_a_new_one(self, picky: PickySink) -> None:
        to = [f"u{n}@example.test" for n in range(MAILS_PER_SESSION)]  # one session's share; the server takes 3
        outcomes = await mailer_for(picky).send_many([Mail(to=t, subject="s", body="b") for t in to])
        assert outcomes == [None] * len(to)
        assert sorted(m.to[0] for m in picky.messages()) == sorted(to)  # each once: the 421'd mail was not taken
        assert len(set(picky.peers)) == 3  # 3 + 3 + 2

    async def test_a_server_that_takes_nothing_fails_the_batch_without_looping(self) -> None:
        closing = PickySink(mails_per_session=0)
        await closing.start("127.0.0.1", 0)
        try:
            mails = [Mail(to=f"u{n}@example.test", subject="s", body="b") for n in range(3)]
            outcomes = await mailer_for(closing).send_many(mails)
        finally:
            await closing.stop()
        assert all(isinstance(o, MailNotSent) for o in outcomes)
        assert closing.messages() == []

    async def test_an_unreachable_server_fails_every_mail(self) -> None:
        mailer = SmtpMailer(host="127.0.0.1", port=free_port(), mail_from="x@penpay.local", timeout_s=1)
        outcomes = await mailer.send_many([Mail(to=f"u{n}@example.test", subject="s", body="b") for n in range(10)])
        assert len(outcomes) == 10 and all(isinstance(o, MailNotSent) for o in outcomes)

    async def test_a_mail_with_a_line_break_in_its_subject_fails_alone(self, sink: MailSink) -> None:
        mails = [
            Mail(to="a@example.test", subject="hi\nBcc: all@example.test", body="x"),
            Mail(to="b@example.test", subject="ok", body="y"),
        ]
        outcomes = await mailer_for(sink).send_many(mails)
        assert isinstance(outcomes[0], ValueError) and outcomes[1] is None
        assert [m.to for m in sink.messages()] == [("b@example.test",)]
