"""The sandbox's SMTP sink: a real SMTP conversation (aiosmtplib) in, the control API's ``/mail`` out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage

import aiosmtplib
import httpx
import pytest
from fastapi import APIRouter

from penpay.sandbox.control import create_control_app
from penpay.sandbox.smtp import MailSink

pytestmark = pytest.mark.contract


@pytest.fixture
async def sink() -> AsyncIterator[MailSink]:
    mail = MailSink()
    await mail.start("127.0.0.1", 0)
    yield mail
    await mail.stop()


@pytest.fixture
async def control(sink: MailSink) -> AsyncIterator[httpx.AsyncClient]:
    app = create_control_app(mail=sink, daraja=APIRouter())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://control.test", timeout=5
    ) as client:
        yield client


async def send(sink: MailSink, to: str, subject: str, body: str) -> None:
    message = EmailMessage()
    message["From"] = "PenPay <no-reply@penpay.local>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    await aiosmtplib.send(message, hostname="127.0.0.1", port=sink.port, timeout=5)


class TestSmtpSink:
    async def test_a_sent_mail_is_readable_over_the_control_api(
        self, sink: MailSink, control: httpx.AsyncClient
    ) -> None:
        await send(sink, "cr1234567@sandbox.deriv.test", "Your deposit is complete", "KES 1,000 credited.\n")
        [mail] = (await control.get("/mail")).json()
        assert mail["from"] == "no-reply@penpay.local"
        assert mail["to"] == ["cr1234567@sandbox.deriv.test"]
        assert mail["subject"] == "Your deposit is complete"
        assert mail["body"] == "KES 1,000 credited.\n"
        assert mail["received_at"].endswith("+00:00")

    async def test_mail_is_listed_newest_last_and_filtered_by_recipient(
        self, sink: MailSink, control: httpx.AsyncClient
    ) -> None:
        await send(sink, "a@example.test", "first", "1")
        await send(sink, "b@example.test", "second", "2")
        await send(sink, "A@example.test", "third", "3")
        assert [m["subject"] for m in (await control.get("/mail")).json()] == ["first", "second", "third"]
        only_a = (await control.get("/mail", params={"to": "a@example.test"})).json()
        assert [m["subject"] for m in only_a] == ["first", "third"]

    async def test_delete_empties_the_sink(self, sink: MailSink, control: httpx.AsyncClient) -> None:
        await send(sink, "a@example.test", "gone soon", "x")
        assert (await control.delete("/mail")).status_code == 204
        assert (await control.get("/mail")).json() == []

    async def test_healthz_answers(self, control: httpx.AsyncClient) -> None:
        assert (await control.get("/healthz")).json() == {"status": "ok"}
